"""Entry point: python -m services.router.main [--config FILE] [--set key=value]."""
from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc

from libs import config as config_lib, grpc_server, service
from libs.experiments import ExperimentSource
from libs.feature_store import open_popular
from recsys.v1 import (candidate_pb2_grpc, experiments_pb2_grpc, outcomes_pb2_grpc,
                       privacy_pb2_grpc, ranking_pb2_grpc, recommend_pb2_grpc)
from services.router.admin_service import ExperimentServicer
from services.router.config import RouterConfig
from services.router.experiment_admin import AdminTokens, ExperimentDocument
from services.router.exposure_log import ExposureLog
from services.router import outcome_service
from services.router.privacy_service import PrivacyServicer, privacy_config
from services.router.recommender import InvalidRequest, Recommender
from services.router.shadow import ShadowRunner


class RecommendServicer(recommend_pb2_grpc.RecommendServiceServicer):
    def __init__(self, recommender: Recommender):
        self.recommender = recommender

    async def Recommend(self, request, context):
        try:
            return await self.recommender.recommend(request, context.time_remaining())
        except InvalidRequest as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))


async def _watch(experiments: ExperimentSource, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        experiments.reload_if_changed()


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
    outcome_log, recorder, publisher = outcome_service.build(config)
    recommender = Recommender(
        experiments, candidate_pb2_grpc.CandidateServiceStub(candidate_channel),
        ranking_pb2_grpc.RankingServiceStub(ranking_channel), popular,
        config.deadline_ms / 1000, config.max_results, exposures, shadows)

    def register(server):
        recommend_pb2_grpc.add_RecommendServiceServicer_to_server(
            RecommendServicer(recommender), server)
        experiments_pb2_grpc.add_ExperimentServiceServicer_to_server(admin, server)
        outcomes_pb2_grpc.add_OutcomeServiceServicer_to_server(
            outcome_service.OutcomeServicer(recorder), server)
        privacy_pb2_grpc.add_PrivacyServiceServicer_to_server(
            PrivacyServicer(privacy_config(config), tokens), server)
        return ["recsys.v1.RecommendService", "recsys.v1.ExperimentService",
                "recsys.v1.OutcomeService", "recsys.v1.PrivacyService"]

    server = await grpc_server.start("router", register, config.host, config.port,
                                     config.metrics_port, config.grace_seconds)
    tasks = [asyncio.create_task(_watch(experiments, config.experiments_poll_seconds))]
    if publisher:
        tasks.append(asyncio.create_task(outcome_service.publish_forever(
            publisher, config.outcome_publish_seconds)))

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
