"""Shadow traffic: a share of requests is answered a second time, with the shadow's
settings, after the client already has its answer; the two answers are compared
(overlap@K of the items, latency) and logged as one JSON line each.

The shadow runs as a background task on the router's event loop, with its own deadline,
and is dropped rather than queued when `max_in_flight` shadows are already running, so a
slow shadow model cannot pile up work behind live traffic.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time

from libs import experiments, log, metrics
from libs.experiments import Serving, Shadow
from recsys.v1 import recommend_pb2
from services.router.exposure_log import ExposureLog

logger = logging.getLogger(__name__)


def overlap_at_k(primary: list[str], shadow: list[str]) -> float:
    """Share of the primary's items the shadow also returned (both cut at the same K)."""
    k = len(primary)
    return len(set(primary) & set(shadow[:k])) / k if k else 1.0


class ShadowRunner:
    def __init__(self, log: ExposureLog | None, max_in_flight: int = 8):
        self.log, self.max_in_flight = log, max_in_flight
        self.tasks: set[asyncio.Task] = set()

    def maybe_start(self, serve, request, served_with: Serving, shadow: Shadow,
                    primary: recommend_pb2.RecommendResponse, primary_ms: float) -> bool:
        """Starts the shadow for this request if the share picks it; never blocks.
        `serve(request, serving, response)` is the router's own serving path."""
        if not shadow.share or random.random() * 100 >= shadow.share:
            return False
        if len(self.tasks) >= self.max_in_flight:
            metrics.SHADOW_REQUESTS.labels("dropped").inc()
            return False
        settings = experiments.served_with(served_with, shadow.serves)
        task = asyncio.create_task(self._run(serve, request, settings, primary, primary_ms))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _run(self, serve, request, settings: Serving,
                   primary: recommend_pb2.RecommendResponse, primary_ms: float) -> None:
        started = time.monotonic()
        answer = recommend_pb2.RecommendResponse(request_id=primary.request_id)
        try:
            await serve(request, settings, answer)
        except Exception as err:  # a shadow failure must never reach live traffic
            metrics.SHADOW_REQUESTS.labels("failed").inc()
            log.event(logger, "shadow failed", logging.WARNING, error=repr(err))
            return
        primary_items = [i.item_id for i in primary.items]
        shadow_items = [i.item_id for i in answer.items]
        overlap = overlap_at_k(primary_items, shadow_items)
        metrics.SHADOW_REQUESTS.labels("compared").inc()
        metrics.SHADOW_OVERLAP.observe(overlap)
        if self.log:
            self.log.write({
                "request_id": primary.request_id, "timestamp": round(time.time(), 3),
                "user_id": request.user_id,
                "shadow_serves": dataclasses.asdict(settings),
                "primary_items": primary_items, "shadow_items": shadow_items,
                "overlap_at_k": round(overlap, 4),
                "primary_latency_ms": round(primary_ms, 2),
                "shadow_latency_ms": round((time.monotonic() - started) * 1000, 2),
                "primary_model_versions": {"retrieval": primary.model_versions.retrieval,
                                           "ranking": primary.model_versions.ranking},
                "shadow_model_versions": {"retrieval": answer.model_versions.retrieval,
                                          "ranking": answer.model_versions.ranking},
                "shadow_fallback": answer.fallback})

    async def drain(self, timeout: float) -> None:
        """On shutdown: lets running shadows finish (and be logged), within `timeout`."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)
