"""Second stage: scores a user's candidates with the ranking model in one batched call."""
from __future__ import annotations

import logging
import time

import grpc

from libs import feature_spec, log
from libs.feature_store import CatalogFeatures, FeastFeatures
from libs.serving_client import ModelClient, to_tensor_proto
from recsys.v1 import common_pb2, ranking_pb2

OUTPUT_KEY = "predicted_rating"
logger = logging.getLogger(__name__)


class InvalidRequest(ValueError):
    pass


def ranking_inputs(user: dict, items: dict[str, list], timestamp: int) -> dict:
    """One row per candidate: the user's features repeated, the item's, the context."""
    n = len(items["item_id"])
    columns = {**{k: [v] * n for k, v in user.items()}, **items,
               "timestamp": [timestamp or int(time.time())] * n}
    return {name: to_tensor_proto(columns[name], feature_spec.BY_NAME[name].dtype)
            for name in feature_spec.RANKING_INPUTS}


class Ranker:
    def __init__(self, features: CatalogFeatures | FeastFeatures, client: ModelClient,
                 model_name: str, max_candidates: int):
        self.features, self.client = features, client
        self.model_name, self.max_candidates = model_name, max_candidates

    async def warm_up(self, num_items: int = 100) -> None:
        """Ranks the most popular items once before taking traffic: loads the feature
        registry, fills the item cache and warms the model's graph."""
        candidates = [common_pb2.ScoredItem(item_id=item)
                      for item, _ in self.features.popular_items(num_items)]
        try:
            await self.rank(ranking_pb2.RankRequest(user_id="warm-up", candidates=candidates),
                            timeout=30)
        except grpc.aio.AioRpcError as err:
            log.event(logger, "warm-up call failed", logging.WARNING, code=err.code().name)

    async def rank(self, request: ranking_pb2.RankRequest,
                   timeout: float | None = None) -> ranking_pb2.RankResponse:
        """Raises grpc.aio.AioRpcError when the model server cannot answer."""
        if not request.user_id:
            raise InvalidRequest("user_id is empty")
        if len(request.candidates) > self.max_candidates:
            raise InvalidRequest(f"at most {self.max_candidates} candidates, "
                                 f"got {len(request.candidates)}")
        if request.model_version and request.model_version_label:
            raise InvalidRequest("model_version and model_version_label are both set; "
                                 "a request names one")
        if not request.candidates:
            return ranking_pb2.RankResponse()
        ids = [c.item_id for c in request.candidates]
        found = await self.features.ranking_features(request.user_id, ids)
        prediction = await self.client.predict(
            self.model_name,
            ranking_inputs(found.user, found.items, request.context.timestamp_seconds),
            version=request.model_version, label=request.model_version_label,
            timeout=timeout)
        scores = prediction.outputs[OUTPUT_KEY].reshape(-1)
        order = sorted(range(len(ids)), key=lambda i: -scores[i])
        response = ranking_pb2.RankResponse(model_version=prediction.version,
                                            features_degraded=found.degraded)
        for i in order:  # the candidate as it came (source, its scores), scored anew
            ranked = response.items.add()
            ranked.CopyFrom(request.candidates[i])
            ranked.score = float(scores[i])
        return response
