"""Shared test settings: paths, the two environments' interpreters, a real Redis."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINING_PYTHON = ROOT / ".venv" / "training" / "bin" / "python"
MOVIELENS = ROOT.parent / "shared" / "data" / "ml-100k"


def start_redis() -> tuple[str, subprocess.Popen]:
    """A real redis-server on a free loopback port, nothing persisted."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; "
                    ".ci/run does it)")
    from tools.stack import free_port
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"127.0.0.1:{port}", process
        time.sleep(0.05)
    process.kill()
    pytest.fail("redis-server did not start")


@pytest.fixture(scope="session")
def redis_server():
    """One Redis for the session, stopped at its end."""
    address, process = start_redis()
    yield address
    process.terminate()
    process.wait(10)
