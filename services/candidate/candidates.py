"""First stage: a user's candidates, minus what they rated.

The two-tower model answers first: its query embedding searched in that version's
candidate index (version_index.py), or for a version without one, the model's own
top-k. Its version's other sources (item-to-item, EASE
neighbours of what the user rated, trending and popular items) are merged with it and the
union ordered by that version's blend (merge.py). A version without sources serves the
two-tower order. Falls back to the most popular unseen items (flagged) for an unknown
user or when the retrieval model cannot answer.
"""
from __future__ import annotations

import asyncio
import logging
import time

import grpc

from libs import candidate_sources, feature_spec, log, metrics
from libs.feature_store import CatalogFeatures, FeastFeatures, default_user
from libs.serving_client import ModelClient, to_tensor_proto
from recsys.v1 import candidate_pb2, common_pb2
from services.candidate.merge import TREND_DEPTH, VersionSources, merge
from services.candidate.version_index import VersionIndexes

logger = logging.getLogger(__name__)
Reason = common_pb2.FallbackReason
EMBEDDING_SIGNATURE = "query_embedding"  # the retrieval model's query tower


class InvalidRequest(ValueError):
    pass


def query_inputs(user: dict, rated_items: set[str], timestamp: int,
                 k: int | None = None) -> dict:
    """Retrieval model inputs for one user, in the spec's types; the history feature is
    everything the user rated, as the online `user_rated_items` view holds it. `k` only
    for the model's own top-k (serving_default), not for its query embedding."""
    row = {**user, "rated_items": feature_spec.join_items(rated_items),
           "timestamp": timestamp or int(time.time())}
    inputs = {n: to_tensor_proto([row[n]], feature_spec.BY_NAME[n].dtype)
              for n in feature_spec.RETRIEVAL_INPUTS}
    if k is not None:
        inputs["k"] = to_tensor_proto(k, "int32")
    return inputs


class CandidateGenerator:
    def __init__(self, features: CatalogFeatures | FeastFeatures, client: ModelClient,
                 model_name: str, max_candidates: int, sources: VersionSources | None = None,
                 default_sources: tuple[str, ...] = ("two_tower",),
                 indexes: VersionIndexes | None = None):
        self.features, self.client = features, client
        self.model_name, self.max_candidates = model_name, max_candidates
        self.sources, self.default_sources = sources, tuple(default_sources)
        self.indexes = indexes
        # the items whose trends are followed: those the last batch run saw rated
        self.trend_items = list(features.item_trends)
        self.trend_orders = candidate_sources.TrendOrders(
            features.item_trends, depth=TREND_DEPTH)

    async def refresh_trends(self) -> bool:
        """The trending and popular sources (and the popularity fallback) from the
        feature store's current rows: between batch runs only the stream moves them."""
        if not await self.features.read_trends(self.trend_items):
            return False
        self.trend_orders = candidate_sources.TrendOrders(
            self.features.item_trends, depth=TREND_DEPTH)
        return True

    async def follow_trends(self, every_seconds: float) -> None:
        while True:
            await asyncio.sleep(every_seconds)
            started = time.perf_counter()
            try:
                refreshed = await self.refresh_trends()
            except Exception as err:  # a bad row must not stop the following
                log.event(logger, "trends refresh failed; keeping the last",
                          logging.ERROR, error=f"{type(err).__name__}: {err}"[:300])
                continue
            if refreshed:
                log.event(logger, "trends refreshed", logging.DEBUG,
                          items=len(self.features.item_trends),
                          as_of=self.features.trends_as_of,
                          seconds=round(time.perf_counter() - started, 3))

    def _popular(self, n: int, exclude: set[str], reason: int, degraded: bool = False):
        metrics.FALLBACKS.labels("candidate", Reason.Name(reason)).inc()
        response = candidate_pb2.CandidateResponse(fallback=True, fallback_reason=reason,
                                                   features_degraded=degraded)
        for item, score in self.features.popular_items(n, exclude):
            response.items.add(item_id=item, score=score, retrieval_score=score,
                               source="popular")
        return response

    async def warm_up(self) -> None:
        """One feature read and one retrieval call before taking traffic: the first of
        each (registry load, graph warm-up) is slow enough to miss a request deadline."""
        found = await self.features.query_features("warm-up")
        if self.indexes:
            await self.indexes.load_newest()
        for signature, k in (("serving_default", 10), (EMBEDDING_SIGNATURE, None)):
            try:
                await self.client.predict(self.model_name, query_inputs(
                    found.user or default_user("warm-up"), found.rated_items, 0, k),
                    signature=signature, timeout=30)
            except grpc.aio.AioRpcError as err:
                log.event(logger, "warm-up call failed", logging.WARNING,
                          code=err.code().name, signature=signature)

    async def _two_tower(self, request, found, exclude: set[str], n: int):
        """(the prediction, the two-tower's n best items not in `exclude`). With indexes:
        the query embedding, searched in the index of the version that embedded it; when
        that index is not loaded (yet), that same version's own top-k."""
        timestamp = request.context.timestamp_seconds
        version, label = request.model_version, request.model_version_label
        if self.indexes:
            prediction = await self.client.predict(
                self.model_name, query_inputs(found.user, found.rated_items, timestamp),
                signature=EMBEDDING_SIGNATURE, version=version, label=label)
            index = self.indexes.get(prediction.version)
            if index is not None:
                query = prediction.outputs["embedding"][0]
                return prediction, self.indexes.search(index, query, n, exclude)
            version, label = prediction.version, ""
        k = min(n + len(exclude), self.features.num_items)
        prediction = await self.client.predict(
            self.model_name, query_inputs(found.user, found.rated_items, timestamp, k),
            version=version, label=label)
        ids, scores = prediction.outputs["item_ids"][0], prediction.outputs["scores"][0]
        two_tower = [(raw.decode(), float(score)) for raw, score in zip(ids, scores)]
        return prediction, [(item, s) for item, s in two_tower if item not in exclude][:n]

    async def candidates(self, request: candidate_pb2.CandidateRequest
                         ) -> candidate_pb2.CandidateResponse:
        if not request.user_id:
            raise InvalidRequest("user_id is empty")
        if not 1 <= request.num_candidates <= self.max_candidates:
            raise InvalidRequest(f"num_candidates must be in 1..{self.max_candidates}, "
                                 f"got {request.num_candidates}")
        if request.model_version and request.model_version_label:
            raise InvalidRequest("model_version and model_version_label are both set; "
                                 "a request names one")
        unknown = [s for s in request.sources if s not in candidate_sources.SOURCES]
        if unknown:
            raise InvalidRequest(f"sources: unknown {unknown}; known: "
                                 f"{', '.join(candidate_sources.SOURCES)}")
        wanted = set(request.sources or self.default_sources)
        n = request.num_candidates
        found = await self.features.query_features(request.user_id)
        exclude = found.rated_items | set(request.exclude_item_ids)
        if found.user is None:
            return self._popular(n, exclude, Reason.UNKNOWN_USER)
        try:
            prediction, two_tower = await self._two_tower(request, found, exclude, n)
        except grpc.aio.AioRpcError as err:
            log.event(logger, "retrieval model failed", logging.WARNING,
                      code=err.code().name, detail=err.details())
            reason = (Reason.MODEL_NOT_SERVED if err.code() == grpc.StatusCode.NOT_FOUND
                      else Reason.RETRIEVAL_UNAVAILABLE)
            return self._popular(n, exclude, reason, found.degraded)
        response = candidate_pb2.CandidateResponse(model_version=prediction.version,
                                                   features_degraded=found.degraded)
        version_sources = (await self.sources.get(prediction.version)
                           if self.sources and wanted != {"two_tower"} else None)
        if version_sources is None:
            for item, score in two_tower:
                response.items.add(item_id=item, score=score, retrieval_score=score,
                                   source="two_tower", source_scores={"two_tower": score})
            return response
        at = request.context.timestamp_seconds or int(time.time())
        for found_item in merge(version_sources, wanted, two_tower, found.rated_items,
                                found.recent_items, exclude, self.trend_orders, at, n):
            added = response.items.add(item_id=found_item.item_id, score=found_item.score,
                                       retrieval_score=found_item.score,
                                       source=found_item.source)
            # one key at a time: a dict given to add() goes through a generic update,
            # 0.45 us a key slower (100 items x 4 keys a response)
            scores = added.source_scores
            for name, value in found_item.source_scores.items():
                scores[name] = value
        return response
