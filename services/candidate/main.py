"""Entry point: python -m services.candidate.main [--config FILE] [--set key=value]."""
from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import threadpoolctl

from libs import grpc_server, service
from libs.feature_store import open_features
from libs.serving_client import ModelClient
from recsys.v1 import candidate_pb2_grpc
from services.candidate.candidates import CandidateGenerator, InvalidRequest
from services.candidate.config import CandidateConfig
from services.candidate.merge import VersionSources
from services.candidate.version_index import VersionIndexes


class CandidateServicer(candidate_pb2_grpc.CandidateServiceServicer):
    def __init__(self, generator: CandidateGenerator):
        self.generator = generator

    async def GetCandidates(self, request, context):
        try:
            return await self.generator.candidates(request)
        except InvalidRequest as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))


async def serve(config: CandidateConfig) -> None:
    # One BLAS thread: a request's exact search is one small matrix-vector product, which
    # BLAS threads make a hundred times slower on a busy machine (measured: 0.1 -> 12 ms
    # at 20,000 items while the other core was loaded)
    threadpoolctl.threadpool_limits(1)
    features = open_features(config)
    client = ModelClient(config.model_server, config.model_timeout_ms / 1000)
    indexes = (VersionIndexes(config.model_base_path, config.ann_min_items,
                              config.ann_probes) if config.candidate_index else None)
    generator = CandidateGenerator(features, client, config.model_name, config.max_candidates,
                                   VersionSources(config.model_base_path), config.sources,
                                   indexes)

    await generator.warm_up()
    polls = [asyncio.create_task(indexes.poll(config.index_poll_seconds))] if indexes else []
    if config.trends_refresh_seconds:
        polls.append(asyncio.create_task(
            generator.follow_trends(config.trends_refresh_seconds)))

    def register(server):
        candidate_pb2_grpc.add_CandidateServiceServicer_to_server(
            CandidateServicer(generator), server)
        return ["recsys.v1.CandidateService"]

    server = await grpc_server.start("candidate", register, config.host, config.port,
                                     config.metrics_port, config.grace_seconds)
    async def stop():
        for task in polls:
            task.cancel()
        await client.close()
    await server.wait(on_stop=stop)


def main(argv=None) -> None:
    service.run("candidate", CandidateConfig, "Candidate retrieval service",
                Path(__file__).with_name("config.yaml"), serve, argv)


if __name__ == "__main__":
    main()
