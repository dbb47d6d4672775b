"""Entry point: python -m services.ranking.main [--config FILE] [--set key=value]."""
from __future__ import annotations

from pathlib import Path

import grpc

from libs import grpc_server, service
from libs.feature_store import open_features
from libs.serving_client import ModelClient
from recsys.v1 import ranking_pb2_grpc
from services.ranking.config import RankingConfig
from services.ranking.ranker import InvalidRequest, Ranker


class RankingServicer(ranking_pb2_grpc.RankingServiceServicer):
    def __init__(self, ranker: Ranker):
        self.ranker = ranker

    async def Rank(self, request, context):
        try:
            return await self.ranker.rank(request)
        except InvalidRequest as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except grpc.aio.AioRpcError as err:
            # NOT_FOUND: the model server has no such model or version (none blessed yet,
            # or gone); the router tells its clients so
            code = (grpc.StatusCode.NOT_FOUND if err.code() == grpc.StatusCode.NOT_FOUND
                    else grpc.StatusCode.UNAVAILABLE)
            await context.abort(code, f"ranking model: {err.code().name}: {err.details()}")


async def serve(config: RankingConfig) -> None:
    features = open_features(config)
    client = ModelClient(config.model_server, config.model_timeout_ms / 1000)
    ranker = Ranker(features, client, config.model_name, config.max_candidates)

    await ranker.warm_up()

    def register(server):
        ranking_pb2_grpc.add_RankingServiceServicer_to_server(RankingServicer(ranker), server)
        return ["recsys.v1.RankingService"]

    server = await grpc_server.start("ranking", register, config.host, config.port,
                                     config.metrics_port, config.grace_seconds)
    await server.wait(on_stop=client.close)


def main(argv=None) -> None:
    service.run("ranking", RankingConfig, "Ranking service",
                Path(__file__).with_name("config.yaml"), serve, argv)


if __name__ == "__main__":
    main()
