"""The public Recommend call: assign arms, retrieve, rank, fall back when a stage fails.

Fallback order: ranking fails -> candidates in retrieval order; candidate service fails
-> popular items. Every fallback is flagged in the response and counted; a client never
gets an error because a model or a downstream service is down.
"""
from __future__ import annotations

import logging
import time
import uuid

import grpc

from libs import log, metrics
from libs.experiments import ExperimentSource, Serving
from libs.feature_store import PopularItems
from recsys.v1 import (candidate_pb2, candidate_pb2_grpc, common_pb2, ranking_pb2,
                       ranking_pb2_grpc, recommend_pb2)
from services.router.exposure_log import ExposureLog, record
from services.router.shadow import ShadowRunner

logger = logging.getLogger(__name__)
Reason = common_pb2.FallbackReason
MIN_STAGE_SECONDS = 0.005


class InvalidRequest(ValueError):
    pass


class Recommender:
    def __init__(self, experiments: ExperimentSource,
                 candidates: candidate_pb2_grpc.CandidateServiceStub,
                 ranking: ranking_pb2_grpc.RankingServiceStub, popular: PopularItems,
                 deadline_seconds: float, max_results: int,
                 exposures: ExposureLog | None = None, shadows: ShadowRunner | None = None):
        self.experiments, self.candidates, self.ranking = experiments, candidates, ranking
        self.popular, self.deadline, self.max_results = popular, deadline_seconds, max_results
        self.exposures, self.shadows = exposures, shadows

    def validate(self, request: recommend_pb2.RecommendRequest) -> None:
        if not request.user_id.strip():
            raise InvalidRequest("user_id is empty")
        if not 1 <= request.num_results <= self.max_results:
            raise InvalidRequest(f"num_results must be in 1..{self.max_results}, "
                                 f"got {request.num_results}")

    def _popular(self, request, response) -> None:
        exclude = set(request.filters.exclude_item_ids)
        for item, score in self.popular.popular_items(request.num_results, exclude):
            response.items.add(item_id=item, score=score, retrieval_score=score)

    def _fallback_popular(self, request, response, reason: int) -> None:
        self._popular(request, response)
        response.fallback, response.fallback_reason = True, reason

    async def recommend(self, request: recommend_pb2.RecommendRequest,
                        time_remaining: float | None = None) -> recommend_pb2.RecommendResponse:
        self.validate(request)
        start = time.monotonic()
        budget = min(self.deadline, time_remaining) if time_remaining else self.deadline
        config = self.experiments.current
        serving, assignments = config.resolve(request.user_id,
                                              dict(request.context.attributes))
        response = recommend_pb2.RecommendResponse(
            request_id=request.request_id or log.request_id.get() or uuid.uuid4().hex,
            config_version=config.version)
        for assignment in assignments:
            metrics.ARM_REQUESTS.labels(assignment.experiment, assignment.arm).inc()
            response.assignments.add(layer=assignment.layer,
                                     experiment=assignment.experiment, arm=assignment.arm)
        await self.serve(request, serving, response, budget)
        if self.shadows:
            self.shadows.maybe_start(self.serve, request, serving, config.shadow, response,
                                     (time.monotonic() - start) * 1000)
        return self._finish(request, response, start)

    async def serve(self, request, serving: Serving, response: recommend_pb2.RecommendResponse,
                    budget: float | None = None) -> None:
        """Fills `response` (items, model versions, fallback) as `serving` says: the live
        answer, and the shadow's."""
        start = time.monotonic()
        budget = budget or self.deadline
        remaining = lambda: max(budget - (time.monotonic() - start), MIN_STAGE_SECONDS)  # noqa: E731
        if serving.candidates == "popular":
            self._popular(request, response)
            return
        metadata = (("x-request-id", response.request_id),)
        context = common_pb2.Context()
        context.CopyFrom(request.context)
        if not context.timestamp_seconds:  # both stages see the same moment
            context.timestamp_seconds = int(time.time())

        try:
            retrieved = await self.candidates.GetCandidates(candidate_pb2.CandidateRequest(
                user_id=request.user_id, num_candidates=max(serving.num_candidates,
                                                            request.num_results),
                context=context, exclude_item_ids=request.filters.exclude_item_ids,
                request_id=response.request_id, model_version=serving.retrieval_version,
                model_version_label=serving.retrieval_version_label,
                sources=serving.source_list()),
                timeout=remaining(), metadata=metadata)
        except grpc.aio.AioRpcError as err:
            log.event(logger, "candidate service failed", logging.WARNING,
                      code=err.code().name, detail=err.details())
            self._fallback_popular(request, response, Reason.CANDIDATES_UNAVAILABLE)
            return

        response.model_versions.retrieval = retrieved.model_version
        response.features_degraded = retrieved.features_degraded
        if retrieved.fallback:
            response.fallback, response.fallback_reason = True, retrieved.fallback_reason
        items = list(retrieved.items)
        if serving.rank and items and not retrieved.fallback:
            try:
                ranked = await self.ranking.Rank(ranking_pb2.RankRequest(
                    user_id=request.user_id, candidates=items, context=context,
                    request_id=response.request_id, model_version=serving.ranking_version,
                    model_version_label=serving.ranking_version_label),
                    timeout=remaining(), metadata=metadata)
                items = list(ranked.items)
                response.model_versions.ranking = ranked.model_version
                response.features_degraded |= ranked.features_degraded
            except grpc.aio.AioRpcError as err:
                log.event(logger, "ranking service failed", logging.WARNING,
                          code=err.code().name, detail=err.details())
                response.fallback, response.fallback_reason = True, (
                    Reason.MODEL_NOT_SERVED if err.code() == grpc.StatusCode.NOT_FOUND
                    else Reason.RANKING_UNAVAILABLE)
        response.items.extend(items[:request.num_results])

    def _finish(self, request, response: recommend_pb2.RecommendResponse, started: float):
        if response.fallback:
            metrics.FALLBACKS.labels("router", Reason.Name(response.fallback_reason)).inc()
        if logger.isEnabledFor(logging.DEBUG):  # the exposure log has every answer
            log.event(logger, "recommended", logging.DEBUG,
                      arms=[a.arm for a in response.assignments], fallback=response.fallback,
                      items=[i.item_id for i in response.items][:20],
                      versions=[response.model_versions.retrieval,
                                response.model_versions.ranking])
        if self.exposures:
            self.exposures.write(record(request, response, started))
        return response
