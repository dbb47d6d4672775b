"""Entry point: python -m services.model_server.main [--config FILE] [--set key=value]."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc  # noqa: E402

from libs import grpc_server, log, service  # noqa: E402
from libs.model_config import ModelConfigFile  # noqa: E402
from services.model_server import prediction  # noqa: E402
from services.model_server.config import ModelServerConfig, model_sources  # noqa: E402
from services.model_server.repository import ModelRepository  # noqa: E402

logger = logging.getLogger(__name__)


def _answer(context: grpc.ServicerContext, fn, *args):
    """fn's answer, or its ServingError as the gRPC status."""
    try:
        return fn(*args)
    except prediction.ServingError as err:
        context.abort(err.code, err.message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress, MultiInference are UNIMPLEMENTED.
    Each call runs in one of the server's threads (TensorFlow releases the GIL)."""

    def __init__(self, repo: ModelRepository):
        self.repo = repo

    def Predict(self, request, context):
        return _answer(context, prediction.predict, self.repo, request)

    def GetModelMetadata(self, request, context):
        return _answer(context, prediction.model_metadata, self.repo, request)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, repo: ModelRepository):
        self.repo = repo

    def GetModelStatus(self, request, context):
        return _answer(context, prediction.model_status, self.repo, request)


async def serve(config: ModelServerConfig) -> None:
    config_file = ModelConfigFile(config.model_config_file) if config.model_config_file \
        else None
    repo = ModelRepository(config_file.sources if config_file else model_sources(config),
                           config.settle_seconds, warm_up=prediction.warm_up,
                           session_config=tf.compat.v1.ConfigProto(
                               intra_op_parallelism_threads=config.intra_op_threads,
                               inter_op_parallelism_threads=config.inter_op_threads))
    if not repo.sources:
        log.event(logger, "serving no models: every Predict answers NOT_FOUND",
                  logging.WARNING)
    repo.poll()  # load what is there before accepting traffic

    def register(server):
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(repo), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(repo), server)
        return ["tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"]

    # threaded, as TF Serving's own server: a Predict is work, not waiting, and a thread
    # per call costs less than an event loop handing it to a pool (-0.15 ms of CPU per
    # query-tower Predict, measured)
    server = await grpc_server.start("model_server", register, config.host, config.port,
                                     config.metrics_port, config.grace_seconds,
                                     threads=config.predict_threads)
    poller = asyncio.create_task(_poll(repo, server, config.poll_seconds, config_file))

    async def stop():
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
    await server.wait(on_stop=stop)


async def _poll(repo: ModelRepository, server: grpc_server.Server, interval: float,
                config_file: ModelConfigFile | None) -> None:
    """Re-reads models.config when it changed, loads new versions (in a thread: loading
    takes a while), moves labels and reports readiness: health is SERVING only while
    every model has a version loaded and once the config's labels have been in force."""
    ready = None
    while True:
        if repo.ready() != ready:
            ready = repo.ready()
            await server.set_serving(ready)
            if not ready:
                log.event(logger, "not ready: a model has no loaded version, or its "
                          "version labels wait for one", logging.WARNING,
                          models=sorted(repo.sources))
        await asyncio.sleep(interval)
        try:
            changed = config_file.changed() if config_file else None
            if changed:
                repo.reconfigure(changed)
            await asyncio.to_thread(repo.poll)
        except Exception:
            logger.exception("model poll failed")


def main(argv=None) -> None:
    service.run("model_server", ModelServerConfig, "TF Serving-compatible model server",
                Path(__file__).with_name("config.yaml"), serve, argv)


if __name__ == "__main__":
    main()
