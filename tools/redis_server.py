"""A real redis-server on a free loopback port, nothing persisted: for tests and
benchmarks (the Debian package; `.ci/run` installs it when absent)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time

from tools.stack import free_port


def start(timeout: float = 10.0) -> tuple[str, subprocess.Popen]:
    """Returns ("127.0.0.1:<port>", the process); the caller stops it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server; "
                           ".ci/run does it)")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"127.0.0.1:{port}", process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(10)
