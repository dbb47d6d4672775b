"""TF Serving's models.config (a text ModelServerConfig): the one parser of it, and the
watcher that re-reads it when it changes (TF Serving's
--model_config_file_poll_wait_seconds).

No TensorFlow here, so tools that edit the file (tools/model_labels.py) start quickly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from libs import log
from libs.config import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class ModelSource:
    """One model the server should serve, as in a TF Serving `ModelConfig`."""
    name: str
    base_path: Path
    policy: str = "latest"  # latest | all | specific
    num_versions: int = 1  # for latest
    versions: tuple[int, ...] = ()  # for specific
    labels: dict[str, int] = field(default_factory=dict)


def parse(text: str, path: Path) -> model_server_config_pb2.ModelServerConfig:
    try:
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as err:
        raise ConfigError(f"{path}: not a valid TF Serving model config: {err}") from None


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the model config: "
                          f"{err.strerror or err}") from None


def read(path: str | Path) -> model_server_config_pb2.ModelServerConfig:
    return parse(read_text(Path(path)), Path(path))


def base_path(model, path: Path) -> Path:
    """A model's base_path; a relative one is relative to the config file's folder."""
    base = Path(model.base_path)
    return base if base.is_absolute() else path.parent / base


def sources(parsed: model_server_config_pb2.ModelServerConfig, path: Path
            ) -> list[ModelSource]:
    found = []
    for model in parsed.model_config_list.config:
        if model.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{path}: model {model.name!r}: platform "
                              f"{model.model_platform!r} is not supported")
        if not model.name or any(s.name == model.name for s in found):
            raise ConfigError(f"{path}: model names must be non-empty and unique, "
                              f"got {model.name!r} again")
        policy = model.model_version_policy.WhichOneof("policy_choice") or "latest"
        found.append(ModelSource(
            name=model.name, base_path=base_path(model, path), policy=policy,
            num_versions=model.model_version_policy.latest.num_versions or 1,
            versions=tuple(model.model_version_policy.specific.versions),
            labels=dict(model.version_labels)))
    if not found:
        raise ConfigError(f"{path}: model_config_list names no model")
    return found


def read_sources(path: str | Path) -> list[ModelSource]:
    return sources(read(path), Path(path))


class ModelConfigFile:
    """models.config, re-read when its text changes. An invalid new text is logged and
    the running config stays; the next change is read again."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.text = read_text(self.path)
        self.sources = sources(parse(self.text, self.path), self.path)
        self._problem = ""  # logged once, not on every poll

    def changed(self) -> list[ModelSource] | None:
        """The new sources when the file changed and is valid; None otherwise."""
        try:
            # the text, not the mtime: a rewrite within the clock's resolution counts too
            text = read_text(self.path)
        except ConfigError as err:
            self._report(str(err))
            return None
        if text == self.text:
            return None
        try:
            new = sources(parse(text, self.path), self.path)
        except ConfigError as err:
            self._report(str(err))
            return None
        finally:
            self.text = text  # an invalid text is reported once, not on every poll
        self.sources, self._problem = new, ""
        log.event(logger, "model config loaded", path=str(self.path),
                  models={s.name: {"policy": s.policy, "versions": list(s.versions),
                                   "labels": s.labels} for s in new})
        return new

    def _report(self, problem: str) -> None:
        if problem != self._problem:
            self._problem = problem
            log.event(logger, "model config rejected; keeping the running one",
                      logging.ERROR, path=str(self.path), error=problem)
