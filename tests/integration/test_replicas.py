"""Replicas share the load: every client spreads its calls over all the addresses of a
service (round robin) and retries a call on another replica when one is gone."""
from __future__ import annotations

import re
import signal
import threading
import time
import urllib.request

import grpc
import pytest

from recsys.v1 import recommend_pb2, recommend_pb2_grpc
from tools.stack import Stack

REPLICATED = ("services/candidate", "services/ranking")
METHODS = {"services/candidate": "GetCandidates", "services/ranking": "Rank"}


@pytest.fixture(scope="module")
def replicated(trained, tmp_path_factory):
    workdir, _ = trained
    # every request ranked, so both replicated stages see every call
    experiments = tmp_path_factory.mktemp("replicas") / "experiments.yaml"
    experiments.write_text('version: "replicas"\n'
                           "defaults: {num_candidates: 50, rank: true}\n")
    stack = Stack.on_free_ports(workdir, replicas={name: 2 for name in REPLICATED}, extra={
        "services/candidate": ["model_timeout_ms=3000"],
        "services/ranking": ["model_timeout_ms=3000"],
        "services/router": ["deadline_ms=8000", f"experiments_file={experiments}"]})
    stack.start()
    yield stack
    stack.stop()


def served_calls(process, method: str) -> float:
    """Calls of `method` the process answered, from its Prometheus endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{process.metrics_port}/metrics",
                                  timeout=5).read().decode()
    pattern = rf'^recsys_rpc_server_seconds_count{{[^}}]*method="{method}"[^}}]*}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def replicas(stack: Stack, name: str) -> list:
    return [p for key, p in stack.processes.items() if key.split("#")[0] == name]


def test_each_replica_answers_about_half_of_the_calls(replicated):
    before = {name: [served_calls(p, METHODS[name]) for p in replicas(replicated, name)]
              for name in REPLICATED}
    with grpc.insecure_channel(replicated.address("services/router")) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        for user in range(200):
            response = stub.Recommend(recommend_pb2.RecommendRequest(
                user_id=str(user % 300 + 1), num_results=5), timeout=10)
            assert not response.fallback, response.fallback_reason
    for name in REPLICATED:
        calls = [served_calls(p, METHODS[name]) - b
                 for p, b in zip(replicas(replicated, name), before[name])]
        assert sum(calls) == 200, (name, calls)
        assert all(0.4 <= c / sum(calls) <= 0.6 for c in calls), (name, calls)


def test_killing_a_replica_under_load_loses_no_request(replicated):
    results: list[str] = []
    stop = threading.Event()

    def client(offset: int):
        with grpc.insecure_channel(replicated.address("services/router")) as channel:
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            user = offset
            while not stop.is_set():
                user += 4
                try:
                    response = stub.Recommend(recommend_pb2.RecommendRequest(
                        user_id=str(user % 300 + 1), num_results=5), timeout=10)
                    results.append("fallback" if response.fallback else "ok")
                except grpc.RpcError as err:
                    results.append(err.code().name)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        before_kill = len(results)
        for name in REPLICATED:
            replicated.processes[f"{name}#1"].popen.send_signal(signal.SIGKILL)
        time.sleep(4)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    after_kill = results[before_kill:]
    assert before_kill > 0 and len(after_kill) > 20
    assert set(results) == {"ok"}, {r: results.count(r) for r in set(results)}
