"""The ranking service orders a user's candidates by the ranking model's score and keeps
what the candidate stage said about each (its retrieval score, source, source scores)."""
from __future__ import annotations

import grpc

from recsys.v1 import common_pb2, ranking_pb2, ranking_pb2_grpc
from tests.integration.helpers import catalog_items, newest_version


def test_candidates_come_back_ordered_by_the_model_with_their_sources(trained, stack):
    workdir, _ = trained
    items = sorted(catalog_items(workdir))[:30]
    candidates = [common_pb2.ScoredItem(
        item_id=item, score=float(i), retrieval_score=float(i), source="ease",
        source_scores={"ease": i / 10, "trending": 2.0}) for i, item in enumerate(items)]
    with grpc.insecure_channel(stack.address("services/ranking")) as channel:
        ranked = ranking_pb2_grpc.RankingServiceStub(channel).Rank(
            ranking_pb2.RankRequest(user_id="5", candidates=candidates), timeout=10)
    assert ranked.model_version == newest_version(workdir, "ranking")
    assert sorted(i.item_id for i in ranked.items) == items
    scores = [i.score for i in ranked.items]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    sent = {c.item_id: c for c in candidates}
    for item in ranked.items:
        assert item.retrieval_score == sent[item.item_id].retrieval_score
        assert item.source == "ease"
        assert dict(item.source_scores) == dict(sent[item.item_id].source_scores)
