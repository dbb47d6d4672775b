"""The local launcher (`make serve`) behaves like the cluster under faults: a service
that dies is restarted within seconds while the others keep answering, and clients see
flagged fallbacks, never errors."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from recsys.v1 import recommend_pb2, recommend_pb2_grpc
from tests.conftest import ROOT
from tests.integration.helpers import user_in_arm
from tools.stack import SERVICES, free_port, restart_delay, service_env


def test_a_crash_waits_longer_each_time_and_a_crash_loop_gives_up():
    assert restart_delay([100.0], 100.0) == 1
    assert restart_delay([10.0, 50.0, 100.0], 100.0) == 4
    assert restart_delay([0.0] * 5 + [100.0], 100.0) is None
    assert restart_delay([-500.0] * 5 + [100.0], 100.0) == 1  # old crashes are forgiven


def pid_of(module: str, port: int) -> int:
    """The process running `module` on `port` (the launcher's child)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if module.encode() in argv and f"port={port}".encode() in argv:
                return int(entry.name)
    raise LookupError(f"no {module} on port {port}")


@pytest.fixture(scope="module")
def launcher(trained, tmp_path_factory):
    # the trained models and features, with the shipped experiment document (other tests
    # rewrite the shared workdir's)
    workdir = tmp_path_factory.mktemp("launcher") / "workdir"
    workdir.mkdir()
    for name in ("model_repo", "features", "data", "last_run.json"):
        (workdir / name).symlink_to(trained[0] / name)
    ports = {t.name: (free_port(), free_port()) for t in SERVICES}
    env = service_env()
    for name, (port, metrics_port) in ports.items():
        prefix = f"RECSYS_{name.split('/')[-1].upper()}"
        env[f"{prefix}_PORT"], env[f"{prefix}_METRICS_PORT"] = str(port), str(metrics_port)
    process = subprocess.Popen([sys.executable, "-m", "tools.stack", "--workdir",
                                str(workdir)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while not any(line.startswith("ready:") for line in lines):
        assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.5)
    yield ports, lines
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(60) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.parametrize("service", ["services/ranking", "services/candidate",
                                     "services/model_server"])
def test_a_killed_service_comes_back_while_clients_get_answers(launcher, service):
    ports, lines = launcher
    restarts = sum(1 for line in lines if line.startswith(f"{service} restarted"))
    ranked_user = user_in_arm("two_stage")  # the arm whose answers the ranking service orders
    results: list[tuple[float, str]] = []
    stop = threading.Event()

    def client():
        with grpc.insecure_channel(f"127.0.0.1:{ports['services/router'][0]}") as channel:
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            while not stop.is_set():
                try:
                    response = stub.Recommend(recommend_pb2.RecommendRequest(
                        user_id=ranked_user, num_results=5), timeout=10)
                    outcome = "fallback" if response.fallback else "ok"
                except grpc.RpcError as err:
                    outcome = err.code().name
                results.append((time.monotonic(), outcome))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        killed_at = time.monotonic()
        os.kill(pid_of(f"{service.replace('/', '.')}.main", ports[service][0]),
                signal.SIGKILL)
        deadline = killed_at + 60
        while sum(1 for line in lines if line.startswith(f"{service} restarted")) == restarts:
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        back_at = time.monotonic()
        time.sleep(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    outcomes = {o for _, o in results}
    assert outcomes <= {"ok", "fallback"}, {o: sum(1 for _, x in results if x == o)
                                            for o in outcomes}
    assert any(o == "fallback" for t, o in results if killed_at <= t <= back_at)
    assert [o for t, o in results if t > back_at + 2] and all(
        o == "ok" for t, o in results if t > back_at + 2)
    assert back_at - killed_at < 60  # restart delay + start-up; 31 s on a slow CI run
    assert any(f"{service} exited (code -9); restarting in 1s" in line
               for line in lines), "".join(lines)
