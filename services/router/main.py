"""Entry point: python -m services.router.main [--config FILE] [--set key=value]."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import grpc

from libs import config as config_lib, feature_stream, grpc_server, log, service
from libs.feature_store import open_popular
from recsys.v1 import (candidate_pb2_grpc, experiments_pb2_grpc, outcomes_pb2,
                       outcomes_pb2_grpc, ranking_pb2_grpc, recommend_pb2_grpc)
from services.router.admin_service import ExperimentServicer
from services.router.config import RouterConfig
from services.router.experiment_admin import AdminTokens, ExperimentDocument
from services.router.experiments import ExperimentSource
from services.router.exposure_log import ExposureLog
from services.router.outcome_stream import OutcomePublisher
from services.router.outcomes import InvalidOutcome, OutcomeRecorder
from services.router.recommender import InvalidRequest, Recommender
from services.router.shadow import ShadowRunner

logger = logging.getLogger(__name__)


class RecommendServicer(recommend_pb2_grpc.RecommendServiceServicer):
    def __init__(self, recommender: Recommender):
        self.recommender = recommender

    async def Recommend(self, request, context):
        try:
            return await self.recommender.recommend(request, context.time_remaining())
        except InvalidRequest as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))


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


async def _watch(experiments: ExperimentSource, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        experiments.reload_if_changed()


async def _publish(publisher: OutcomePublisher, interval: float) -> None:
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


def _outcomes(config: RouterConfig) -> tuple[ExposureLog | None, OutcomeRecorder | None,
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


async def serve(config: RouterConfig) -> None:
    experiments = ExperimentSource(config.experiments_file)
    tokens = (config_lib.load(AdminTokens, config.admin_tokens_file)
              if config.admin_tokens_file else AdminTokens())
    admin = ExperimentServicer(
        ExperimentDocument(config.experiments_file, config.experiment_audit_log),
        experiments, tokens)
    popular = open_popular(config)
    candidate_channel = grpc_server.channel(config.candidate_service)
    ranking_channel = grpc_server.channel(config.ranking_service)
    exposures = (ExposureLog(config.exposure_log_dir, config.exposure_fsync_seconds)
                 if config.exposure_log_dir else None)
    shadow_log = (ExposureLog(config.shadow_log_dir, config.exposure_fsync_seconds,
                              prefix="shadow") if config.shadow_log_dir else None)
    shadows = ShadowRunner(shadow_log, config.shadow_max_in_flight)
    outcome_log, recorder, publisher = _outcomes(config)
    recommender = Recommender(
        experiments, candidate_pb2_grpc.CandidateServiceStub(candidate_channel),
        ranking_pb2_grpc.RankingServiceStub(ranking_channel), popular,
        config.deadline_ms / 1000, config.max_results, exposures, shadows)

    def register(server):
        recommend_pb2_grpc.add_RecommendServiceServicer_to_server(
            RecommendServicer(recommender), server)
        experiments_pb2_grpc.add_ExperimentServiceServicer_to_server(admin, server)
        outcomes_pb2_grpc.add_OutcomeServiceServicer_to_server(OutcomeServicer(recorder),
                                                               server)
        return ["recsys.v1.RecommendService", "recsys.v1.ExperimentService",
                "recsys.v1.OutcomeService"]

    server = await grpc_server.start("router", register, config.host, config.port,
                                     config.metrics_port, config.grace_seconds)
    tasks = [asyncio.create_task(_watch(experiments, config.experiments_poll_seconds))]
    if publisher:
        tasks.append(asyncio.create_task(_publish(publisher, config.outcome_publish_seconds)))

    async def close():
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await shadows.drain(config.grace_seconds)
        await candidate_channel.close()
        await ranking_channel.close()
        for log_file in (exposures, shadow_log, outcome_log):
            if log_file:
                log_file.close()
    await server.wait(on_stop=close)


def main(argv=None) -> None:
    service.run("router", RouterConfig, "Router: the public RecommendService",
                Path(__file__).with_name("config.yaml"), serve, argv)


if __name__ == "__main__":
    main()
