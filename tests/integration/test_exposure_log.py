"""Every response is in the exposure log, as served, across a graceful restart and a
kill of the router; the restarted router assigns the same arms."""
from __future__ import annotations

import json
import os
import signal

import grpc

from pipelines.experiments import exposures
from recsys.v1 import recommend_pb2, recommend_pb2_grpc
from tests.integration.helpers import extra_router

ROUTER = "services/router"


def answers(router, users) -> list:
    with grpc.insecure_channel(router.address(ROUTER)) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        return [stub.Recommend(recommend_pb2.RecommendRequest(user_id=u, num_results=5),
                               timeout=10) for u in users]


def test_every_response_is_logged_across_restart_and_kill(stack, tmp_path):
    directory = tmp_path / "exposures"
    served = []
    for stop in ("graceful", "kill"):
        router = extra_router(stack, f"exposure_log_dir={directory}",
                              "exposure_fsync_seconds=60")
        try:
            served += answers(router, [str(u) for u in range(1, 31)] + ["no-such-user"])
        finally:
            if stop == "kill":  # no shutdown hook runs: only what reached the OS survives
                os.killpg(router.processes[ROUTER].popen.pid, signal.SIGKILL)
            router.stop()

    # a restarted router puts every user in the same arms
    first, second = served[:31], served[31:]
    assert [a.assignments for a in first] == [a.assignments for a in second]

    files = sorted(directory.glob("exposures-*.jsonl"))
    assert len(files) == 2  # one per router process
    logged = {}
    for path in files:
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            assert entry["request_id"] not in logged, "a response was logged twice"
            logged[entry["request_id"]] = entry
    assert set(logged) == {r.request_id for r in served}
    for response in served:
        entry = logged[response.request_id]
        assert entry["items"] == [i.item_id for i in response.items]
        assert entry["assignments"] == [{"layer": a.layer, "experiment": a.experiment,
                                         "arm": a.arm} for a in response.assignments]
        assert entry["config_version"] == response.config_version
        assert entry["model_versions"] == {"retrieval": response.model_versions.retrieval,
                                           "ranking": response.model_versions.ranking}
        assert entry["fallback"] == response.fallback and entry["latency_ms"] > 0
    assert logged[served[30].request_id]["user_id"] == "no-such-user"
    assert logged[served[30].request_id]["fallback"]
    # the experiment analysis reads the log as the router wrote it
    frame = exposures.read_exposures(directory)
    assert sorted(frame.request_id) == sorted(r.request_id for r in served)
