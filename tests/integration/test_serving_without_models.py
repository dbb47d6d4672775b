"""A stack whose models were never blessed still starts and answers, every answer flagged
MODEL_NOT_SERVED: without a ranking model in retrieval order, without any model popular
items."""
from __future__ import annotations

import grpc
import pytest

from recsys.v1 import common_pb2, recommend_pb2, recommend_pb2_grpc
from tests.integration.helpers import user_in_arm
from tools.stack import Stack, unpushed_models


def workdir_with(trained_dir, path, models: tuple[str, ...]):
    """A workdir sharing the trained one's features and data, holding only `models`."""
    for name in ("features", "data"):
        (path / name).symlink_to(trained_dir / name)
    (path / "model_repo").mkdir()
    for name in models:
        (path / "model_repo" / name).symlink_to(trained_dir / "model_repo" / name)
    return path


@pytest.mark.parametrize("models", [("retrieval",), ()], ids=["no ranking", "no model"])
def test_the_stack_serves_what_it_can_and_says_why(trained, tmp_path, models):
    workdir = workdir_with(trained[0], tmp_path, models)
    assert len(unpushed_models(str(workdir))) == 2 - len(models)
    stack = Stack.on_free_ports(workdir, extra={"services/router": ["deadline_ms=8000"]})
    stack.start()
    try:
        with grpc.insecure_channel(stack.address("services/router")) as channel:
            response = recommend_pb2_grpc.RecommendServiceStub(channel).Recommend(
                recommend_pb2.RecommendRequest(user_id=user_in_arm("two_stage"),
                                               num_results=6), timeout=10)
    finally:
        stack.stop()
    assert response.fallback and response.fallback_reason == common_pb2.MODEL_NOT_SERVED
    assert len(response.items) == 6 and response.model_versions.ranking == 0
    if models:  # retrieval answered: its order, its version
        assert response.model_versions.retrieval > 0
        scores = [i.retrieval_score for i in response.items]
        assert scores == sorted(scores, reverse=True)
    else:
        assert response.model_versions.retrieval == 0
