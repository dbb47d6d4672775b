"""Model server configuration (schema; defaults in config.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from libs.config import ConfigError
from libs.service import ServiceConfig
from services.model_server.repository import ModelSource


@dataclass
class ModelServerConfig(ServiceConfig):
    port: int = 8500  # TF Serving's gRPC port
    metrics_port: int = 8502
    model_repo: str = "var/model_repo"
    model_names: list[str] = field(default_factory=lambda: ["retrieval", "ranking"])
    # A TF Serving models.config (text ModelServerConfig); when set it replaces
    # model_repo/model_names, exactly as `tensorflow_model_server --model_config_file`.
    model_config_file: str = ""
    poll_seconds: float = 1.0
    settle_seconds: float = 1.0  # a version is loaded once its files stop changing
    # TensorFlow thread pools; 0 = one per core. Requests are small, so one thread each
    # costs less CPU per call than TensorFlow's default pools (measured: -15 %).
    intra_op_threads: int = 1
    inter_op_threads: int = 1

    def validate(self) -> None:
        super().validate()
        if self.poll_seconds <= 0:
            raise ValueError("field 'poll_seconds' must be positive")
        if not self.model_config_file and not self.model_names:
            raise ValueError("field 'model_names' is empty and no model_config_file is set")


def model_sources(config: ModelServerConfig) -> list[ModelSource]:
    if not config.model_config_file:
        return [ModelSource(name, Path(config.model_repo) / name)
                for name in config.model_names]
    path = Path(config.model_config_file)
    try:
        parsed = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    except (OSError, text_format.ParseError) as err:
        raise ConfigError(f"{path}: not a valid TF Serving model config: {err}") from None
    sources = []
    for model in parsed.model_config_list.config:
        if model.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{path}: model {model.name!r}: platform "
                              f"{model.model_platform!r} is not supported")
        base = Path(model.base_path)
        policy = model.model_version_policy.WhichOneof("policy_choice") or "latest"
        sources.append(ModelSource(
            name=model.name,
            base_path=base if base.is_absolute() else path.parent / base,
            policy=policy,
            num_versions=model.model_version_policy.latest.num_versions or 1,
            versions=tuple(model.model_version_policy.specific.versions),
            labels=dict(model.version_labels)))
    if not sources:
        raise ConfigError(f"{path}: model_config_list names no model")
    return sources
