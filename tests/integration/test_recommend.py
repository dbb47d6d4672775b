"""Recommend round trips through router -> candidate -> ranking -> model server."""
from __future__ import annotations

import json
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from libs.candidate_sources import SOURCES
from recsys.v1 import common_pb2, recommend_pb2
from tests.integration.helpers import catalog_items, newest_version, rated_items, user_in_arm

Request = recommend_pb2.RecommendRequest


def test_training_blessed_and_pushed_both_models(trained):
    _, summary = trained
    assert summary["retrieval"]["blessed"] and summary["ranking"]["blessed"]
    assert summary["retrieval"]["serving_version"] and summary["ranking"]["serving_version"]
    # the time split: evaluation ratings all come after the training ones
    assert summary["snapshot"]["train_rows"] == 16_000


def test_ranked_answer_for_a_known_user(trained, recommend):
    workdir, summary = trained
    user = user_in_arm("two_stage")
    response = recommend.Recommend(Request(user_id=user, num_results=10,
                                           request_id="req-ranked-1"), timeout=10)
    ids = [i.item_id for i in response.items]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert not response.fallback
    assert [(a.layer, a.experiment, a.arm) for a in response.assignments] == [
        ("pipeline", "two_stage_vs_retrieval_only", "two_stage")]
    assert response.request_id == "req-ranked-1"
    assert response.config_version == "2026-12-05.1"
    # the versions the pipeline pushed, or newer ones other tests pushed
    assert response.model_versions.retrieval == newest_version(workdir, "retrieval")
    assert response.model_versions.ranking == newest_version(workdir, "ranking")
    assert response.model_versions.retrieval >= summary["retrieval"]["serving_version"]
    assert set(ids) <= catalog_items(workdir)
    assert not set(ids) & rated_items(workdir, user), "already-rated items were returned"
    scores = [i.score for i in response.items]
    assert scores == sorted(scores, reverse=True)
    assert all(1.0 <= s <= 5.0 for s in scores)  # predicted ratings


def test_retrieval_only_arm_skips_ranking(recommend):
    user = user_in_arm("retrieval_only")
    response = recommend.Recommend(Request(user_id=user, num_results=5), timeout=10)
    assert response.assignments[0].arm == "retrieval_only" and not response.fallback
    assert response.model_versions.ranking == 0 and response.model_versions.retrieval > 0
    assert len(response.items) == 5
    # the candidate stage's blended order, each item naming the source that proposed it
    assert all(i.source in SOURCES for i in response.items)
    scores = [i.score for i in response.items]
    assert scores == sorted(scores, reverse=True)


def test_same_user_same_arm_and_filters_apply(recommend):
    first = recommend.Recommend(Request(user_id="7", num_results=8), timeout=10)
    excluded = [first.items[0].item_id, first.items[1].item_id]
    second = recommend.Recommend(Request(
        user_id="7", num_results=8,
        filters=recommend_pb2.Filters(exclude_item_ids=excluded)), timeout=10)
    assert second.assignments == first.assignments
    assert not {i.item_id for i in second.items} & set(excluded)


def test_unknown_user_gets_popular_items_flagged(recommend):
    response = recommend.Recommend(Request(user_id="nobody-knows-me", num_results=6),
                                   timeout=10)
    assert response.fallback
    assert response.fallback_reason == common_pb2.UNKNOWN_USER
    assert len(response.items) == 6
    popularity = [i.score for i in response.items]
    assert popularity == sorted(popularity, reverse=True) and popularity[0] == 1.0


@pytest.mark.parametrize("request_, words", [
    (Request(user_id="1", num_results=0), "num_results must be in 1..100, got 0"),
    (Request(user_id="1", num_results=101), "num_results must be in 1..100, got 101"),
    (Request(user_id="", num_results=5), "user_id is empty"),
])
def test_bad_requests_get_invalid_argument(recommend, request_, words):
    with pytest.raises(grpc.RpcError) as err:
        recommend.Recommend(request_, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in err.value.details()


def test_every_service_has_health_reflection_and_metrics(stack, recommend):
    recommend.Recommend(Request(user_id="3", num_results=3), timeout=10)
    expected = {"services/router": "recsys.v1.RecommendService",
                "services/candidate": "recsys.v1.CandidateService",
                "services/ranking": "recsys.v1.RankingService",
                "services/model_server": "tensorflow.serving.PredictionService"}
    for name, service in expected.items():
        with grpc.insecure_channel(stack.address(name)) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            reply = next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
            listed = {s.name for s in reply.list_services_response.service}
            assert service in listed and "grpc.health.v1.Health" in listed
        metrics_port = stack.processes[name].metrics_port
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=5).read().decode()
        assert "recsys_rpc_server_seconds_count" in text, name


def test_logs_are_json_and_carry_the_request_id(stack, recommend):
    # the stack runs the router and the candidate service with log_level=DEBUG
    # (conftest.py), which logs every RPC and answer; at INFO only failed ones are
    recommend.Recommend(Request(user_id="5", num_results=3, request_id="trace-me-42"),
                        timeout=10)
    for name in ("services/router", "services/candidate"):
        lines = [json.loads(line) for line in stack.processes[name].log_path.read_text()
                 .splitlines() if line.startswith("{")]
        assert any(entry.get("request_id") == "trace-me-42" for entry in lines), name
