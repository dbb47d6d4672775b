"""Model server configuration (schema; defaults in config.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from libs import model_config
from libs.model_config import ModelSource
from libs.service import ServiceConfig


@dataclass
class ModelServerConfig(ServiceConfig):
    port: int = 8500  # TF Serving's gRPC port
    metrics_port: int = 8502
    model_repo: str = "var/model_repo"
    # empty: serve nothing (every Predict is NOT_FOUND), as the stack runs when no model
    # was ever pushed, so the services answer with flagged fallbacks
    model_names: list[str] = field(default_factory=lambda: ["retrieval", "ranking"])
    # A TF Serving models.config (text ModelServerConfig); when set it replaces
    # model_repo/model_names, exactly as `tensorflow_model_server --model_config_file`.
    # It is re-read every poll_seconds (TF Serving: --model_config_file_poll_wait_seconds):
    # that is how version labels move; an invalid new file is logged and not applied.
    model_config_file: str = ""
    poll_seconds: float = 1.0
    settle_seconds: float = 1.0  # a version is loaded once its files stop changing
    # TensorFlow's thread pools (a Session's ConfigProto); 0 = one per core. Requests are
    # small, so one thread for an op's inner loops costs less CPU per call than the default
    # pools (measured: -15 %), and -1 runs the ops in the Predict's own thread instead of
    # handing them to a pool thread (-0.04 ms of CPU per query-tower Predict).
    intra_op_threads: int = 1
    inter_op_threads: int = -1
    # the server's threads: this many Predicts (or other calls) run at once, the rest wait
    predict_threads: int = 4

    def validate(self) -> None:
        super().validate()
        if self.poll_seconds <= 0:
            raise ValueError("field 'poll_seconds' must be positive")
        if self.intra_op_threads < 0:
            raise ValueError("field 'intra_op_threads' must be 0 (one per core) or more")
        if self.inter_op_threads < -1:
            raise ValueError("field 'inter_op_threads' must be -1 (the caller's thread), "
                             "0 (one per core) or more")
        if self.predict_threads < 1:
            raise ValueError("field 'predict_threads' must be at least 1")


def model_sources(config: ModelServerConfig) -> list[ModelSource]:
    if not config.model_config_file:
        return [ModelSource(name, Path(config.model_repo) / name)
                for name in config.model_names]
    return model_config.read_sources(config.model_config_file)
