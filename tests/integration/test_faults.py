"""A stage that is down degrades the answer (flagged), never fails the client."""
from __future__ import annotations

import time

import pytest

from recsys.v1 import common_pb2, recommend_pb2
from tests.integration.helpers import user_in_arm
from tools import build_manifest

Request = recommend_pb2.RecommendRequest


@pytest.fixture
def stopped(stack):
    """Stops services for one test and starts them again afterwards."""
    targets = build_manifest.load()
    names = []

    def stop(name):
        names.append(name)
        stack.stop_service(name)
    yield stop
    for name in names:
        stack.start_service(targets[name])


def test_model_server_down_router_answers_popular_items(stopped, recommend):
    stopped("services/model_server")
    response = recommend.Recommend(Request(user_id=user_in_arm("two_stage"), num_results=7),
                                   timeout=10)
    assert response.fallback
    assert response.fallback_reason == common_pb2.RETRIEVAL_UNAVAILABLE
    assert len(response.items) == 7 and response.model_versions.retrieval == 0


def test_ranking_down_router_answers_in_retrieval_order(stopped, recommend):
    stopped("services/ranking")
    response = recommend.Recommend(Request(user_id=user_in_arm("two_stage"), num_results=7),
                                   timeout=10)
    assert response.fallback
    assert response.fallback_reason == common_pb2.RANKING_UNAVAILABLE
    assert response.model_versions.retrieval > 0 and response.model_versions.ranking == 0
    retrieval = [i.retrieval_score for i in response.items]
    assert len(retrieval) == 7 and retrieval == sorted(retrieval, reverse=True)


def test_candidate_service_down_router_answers_popular_items(stopped, recommend):
    stopped("services/candidate")
    response = recommend.Recommend(Request(user_id="9", num_results=4), timeout=10)
    assert response.fallback
    assert response.fallback_reason == common_pb2.CANDIDATES_UNAVAILABLE
    assert len(response.items) == 4


def test_answers_recover_within_seconds_once_services_return(recommend):
    # runs after the tests above restarted what they stopped
    deadline = time.monotonic() + 5
    while True:
        response = recommend.Recommend(Request(user_id=user_in_arm("two_stage"),
                                               num_results=3), timeout=10)
        if not response.fallback or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not response.fallback and response.model_versions.ranking > 0
