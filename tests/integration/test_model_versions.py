"""New model versions: hot swap under load, and the gate that refuses worse models."""
from __future__ import annotations

import shutil
import threading
import time

import grpc

from recsys.v1 import recommend_pb2, recommend_pb2_grpc
from tests.integration.helpers import newest_version, user_in_arm


def test_pushing_a_new_version_fails_no_request(trained, stack):
    workdir, _ = trained
    errors, fallbacks, seen = [], [], set()
    stop = threading.Event()
    user = user_in_arm("two_stage")

    def client():
        with grpc.insecure_channel(stack.address("services/router")) as channel:
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            while not stop.is_set():
                try:
                    r = stub.Recommend(recommend_pb2.RecommendRequest(
                        user_id=user, num_results=10), timeout=10)
                    seen.add((r.model_versions.retrieval, r.model_versions.ranking))
                    if r.fallback:
                        fallbacks.append(r.fallback_reason)
                except grpc.RpcError as err:
                    errors.append(err.code())

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        new_versions = {}
        for name in ("retrieval", "ranking"):
            base = workdir / "model_repo" / name
            current = newest_version(workdir, name)
            new_versions[name] = current + 1
            # copied in place, file by file, as TFX's Pusher does
            shutil.copytree(base / str(current), base / str(new_versions[name]))
        deadline = time.monotonic() + 30
        target = (new_versions["retrieval"], new_versions["ranking"])
        while target not in seen and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert target in seen, f"new versions never served; saw {sorted(seen)}"
    assert not errors and not fallbacks
    assert len(seen) >= 2  # old and new versions both answered during the run


def test_gate_refuses_to_push_a_worse_model(refused):
    summary, before, after = refused
    assert not summary["retrieval"]["blessed"]
    assert "worse than the last blessed model" in " ".join(summary["retrieval"]["reasons"])
    assert not summary["ranking"]["blessed"]
    # TFMA's verdict, spelled out: the metric, its value and the threshold it broke
    assert "root_mean_squared_error" in " ".join(summary["ranking"]["final_gate"]["reasons"])
    assert after == before, "a model that failed its gate reached the model repository"
