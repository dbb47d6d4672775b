"""Experiment config changes on running routers: picked up by every replica without a
restart, the version in each response; an invalid document is refused and the running
one keeps serving."""
from __future__ import annotations

import os

import grpc
import pytest
import yaml

from recsys.v1 import recommend_pb2, recommend_pb2_grpc
from tests.integration.helpers import extra_router, wait_for

ROUTER = "services/router"


def document(version: str, arms: list[tuple[str, dict]]) -> dict:
    return {"version": version, "layers": [{"name": "main", "experiments": [{
        "key": "candidates", "arms": [{"name": name, "weight": 1, "serves": serves}
                                      for name, serves in arms]}]}]}


@pytest.fixture
def replicas(stack, tmp_path):
    """Two more routers over the suite's stack, reading one experiment file."""
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(document("r1", [("ranked", {"rank": True})])))
    routers, channels = [], []
    try:
        for _ in range(2):
            routers.append(extra_router(stack, f"experiments_file={path}",
                                        "experiments_poll_seconds=0.2"))
            channels.append(grpc.insecure_channel(routers[-1].address(ROUTER)))
        yield path, [recommend_pb2_grpc.RecommendServiceStub(c) for c in channels], routers
    finally:
        for channel in channels:
            channel.close()
        for router in routers:
            router.stop()


def ask(stub, user="7"):
    return stub.Recommend(recommend_pb2.RecommendRequest(user_id=user, num_results=5),
                          timeout=10)


def rewrite(path, doc):
    path.write_text(yaml.safe_dump(doc) if isinstance(doc, dict) else doc)
    os.utime(path)  # a new mtime even within the clock's resolution


def test_every_replica_takes_a_new_config_without_restart(replicas):
    path, stubs, _ = replicas
    for stub in stubs:
        first = ask(stub)
        assert first.config_version == "r1" and first.assignments[0].arm == "ranked"
        assert first.model_versions.ranking > 0
    rewrite(path, document("r2", [("popular", {"candidates": "popular"})]))
    for stub in stubs:
        answer = wait_for(lambda: (a := ask(stub)).config_version == "r2" and a, 30)
        assert answer.assignments[0].arm == "popular"
        # the popular strategy: no model asked, not a fallback
        assert not answer.fallback and answer.model_versions.retrieval == 0
        assert len(answer.items) == 5


def test_an_invalid_config_is_refused_and_the_running_one_keeps_serving(replicas):
    path, stubs, routers = replicas
    rewrite(path, document("r3", [("broken", {"candidates": "random"})]))
    log = routers[0].processes[ROUTER].log_path
    wait_for(lambda: "experiment config rejected" in log.read_text(errors="replace"), 30)
    assert "field 'candidates' must be model or popular" in log.read_text(errors="replace")
    for stub in stubs:
        answer = ask(stub)
        assert answer.config_version == "r1" and answer.assignments[0].arm == "ranked"
