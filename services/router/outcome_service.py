"""OutcomeService over gRPC and what stands behind it in the router: the recorder
(outcomes.py) and, when the feature stream is configured, its publisher
(outcome_stream.py) running beside the server."""
from __future__ import annotations

import asyncio
import logging

import grpc

from libs import feature_stream, log
from recsys.v1 import outcomes_pb2, outcomes_pb2_grpc
from services.router.config import RouterConfig
from services.router.exposure_log import ExposureLog
from services.router.outcome_stream import OutcomePublisher
from services.router.outcomes import InvalidOutcome, OutcomeRecorder

logger = logging.getLogger(__name__)


class OutcomeServicer(outcomes_pb2_grpc.OutcomeServiceServicer):
    def __init__(self, recorder: OutcomeRecorder | None):
        self.recorder = recorder

    async def RecordOutcomes(self, request, context):
        if self.recorder is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "this router keeps no outcome log (outcome_log_dir is empty)")
        try:
            counts = await asyncio.to_thread(self.recorder.record, request)
        except InvalidOutcome as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return outcomes_pb2.RecordOutcomesResponse(
            accepted=counts.accepted, duplicates=counts.duplicates, late=counts.late)


async def publish_forever(publisher: OutcomePublisher, interval: float) -> None:
    """Follows the outcome log; while Redis is down, retries with a growing pause (the
    log keeps the events meanwhile)."""
    pause, failing = interval, False
    while True:
        await asyncio.sleep(pause)
        try:
            await asyncio.to_thread(publisher.step)
            if failing:
                log.event(logger, "publishing outcomes to the feature stream again")
            pause, failing = interval, False
        except Exception as err:  # Redis unreachable or refusing
            if not failing:
                log.event(logger, "cannot publish outcomes to the feature stream; retrying",
                          logging.WARNING, error=f"{type(err).__name__}: {err}"[:300])
            pause, failing = min(pause * 2, 10.0), True


def build(config: RouterConfig) -> tuple[ExposureLog | None, OutcomeRecorder | None,
                                             OutcomePublisher | None]:
    if not config.outcome_log_dir:
        return None, None, None
    outcome_log = ExposureLog(config.outcome_log_dir, config.exposure_fsync_seconds,
                              prefix="outcomes", time_field="received")
    recorder = OutcomeRecorder(outcome_log, config.outcome_horizon_seconds,
                               config.outcome_dedupe_seconds, config.outcome_max_batch)
    publisher = OutcomePublisher(
        config.outcome_log_dir, "outcomes",
        feature_stream.redis_client(config.outcome_stream_redis, config.outcome_stream_ssl),
        config.outcome_stream, config.outcome_dedupe_seconds
    ) if config.outcome_stream_redis else None
    return outcome_log, recorder, publisher
