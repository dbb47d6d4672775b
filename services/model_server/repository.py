"""The model repository as TF Serving reads it: `<base_path>/<integer version>/saved_model.pb`.

A poller loads versions as they appear (once their files have stopped changing, since a
Pusher copies files in place) and unloads versions the policy no longer wants. The set of
loaded models is replaced atomically, so a request that already holds a version finishes
on it while new requests see the new one.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from libs import log, metrics

logger = logging.getLogger(__name__)


MAX_LOAD_ATTEMPTS = 3


class NotFound(LookupError):
    pass


@dataclass
class ModelSource:
    """One model the server should serve, as in a TF Serving `ModelConfig`."""
    name: str
    base_path: Path
    policy: str = "latest"  # latest | all | specific
    num_versions: int = 1  # for latest
    versions: tuple[int, ...] = ()  # for specific
    labels: dict[str, int] = field(default_factory=dict)


@dataclass
class LoadedVersion:
    name: str
    version: int
    path: Path
    module: object
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]
    loaded_at: float

    def signature(self, name: str):
        return self.module.signatures.get(name)


def available_versions(base_path: Path, settle_seconds: float) -> list[int]:
    """Complete version directories, oldest first."""
    now = time.time()
    versions = []
    for child in base_path.iterdir() if base_path.is_dir() else ():
        if not child.name.isdigit() or not (child / "saved_model.pb").is_file():
            continue
        newest_write = max(p.stat().st_mtime for p in child.rglob("*") if p.is_file())
        if now - newest_write >= settle_seconds:
            versions.append(int(child.name))
    return sorted(versions)


def wanted_versions(source: ModelSource, available: list[int]) -> list[int]:
    if source.policy == "all":
        return available
    if source.policy == "specific":
        return [v for v in available if v in source.versions]
    return available[-source.num_versions:]


def _signature_defs(path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    return {k: v for k, v in saved.meta_graphs[0].signature_def.items()
            if not k.startswith("__")}


class ModelRepository:
    def __init__(self, sources: list[ModelSource], settle_seconds: float = 1.0,
                 warm_up: Callable[[LoadedVersion], int] | None = None):
        self.sources = {s.name: s for s in sources}
        self.settle_seconds = settle_seconds
        self.warm_up = warm_up  # run on each new version before it serves
        self._loaded: dict[str, dict[int, LoadedVersion]] = {s.name: {} for s in sources}
        # (model, version) -> (load attempts, last error); retried MAX_LOAD_ATTEMPTS times
        self._failed: dict[tuple[str, int], tuple[int, str]] = {}
        self._lock = threading.Lock()  # one poll at a time; readers never lock

    # -- reading (request path) -------------------------------------------------------
    def get(self, name: str, version: int = 0, label: str = "") -> LoadedVersion:
        versions = self._loaded.get(name)
        if versions is None:
            raise NotFound(f"Servable not found for request: Latest({name})")
        if label:
            labelled = self.sources[name].labels.get(label)
            if labelled is None:
                raise NotFound(f"Unrecognized servable version label: {label}")
            version = labelled
        if version:
            found = versions.get(version)
            if found is None:
                raise NotFound(f"Servable not found for request: Specific({name}, {version})")
            return found
        if not versions:
            raise NotFound(f"Servable not found for request: Latest({name})")
        return versions[max(versions)]

    def ready(self) -> bool:
        """Every model has at least one version loaded."""
        return all(self._loaded[name] for name in self.sources)

    def status(self, name: str) -> dict[int, str]:
        if name not in self.sources:
            raise NotFound(f"Could not find any versions of model {name}")
        states = {v: "AVAILABLE" for v in self._loaded[name]}
        states.update({v: f"END: {err}" for (n, v), (_, err) in self._failed.items()
                       if n == name and v not in states})
        return states

    # -- polling ----------------------------------------------------------------------
    def poll(self) -> None:
        with self._lock:
            for name, source in self.sources.items():
                want = wanted_versions(source, available_versions(source.base_path,
                                                                  self.settle_seconds))
                current = self._loaded[name]
                updated = {v: current[v] for v in want if v in current}
                for version in want:
                    attempts, _ = self._failed.get((name, version), (0, ""))
                    if version in updated or attempts >= MAX_LOAD_ATTEMPTS:
                        continue
                    loaded = self._load(name, version, source.base_path / str(version))
                    if loaded:
                        updated[version] = loaded
                if set(updated) != set(current):
                    self._loaded = {**self._loaded, name: updated}  # atomic swap
                    for version in set(current) - set(updated):
                        metrics.MODEL_VERSION.remove(name, str(version))
                        log.event(logger, "unloaded model", model=name, version=version)

    def _load(self, name: str, version: int, path: Path) -> LoadedVersion | None:
        start = time.monotonic()
        try:
            module = tf.saved_model.load(str(path))
            loaded = LoadedVersion(name, version, path, module, _signature_defs(path),
                                   time.time())
            warmed = self.warm_up(loaded) if self.warm_up else 0
        except Exception as err:  # a corrupt version must not take the server down
            attempts = self._failed.get((name, version), (0, ""))[0] + 1
            message = (str(err).splitlines() or [type(err).__name__])[0][:300]
            self._failed[(name, version)] = (attempts, message)
            log.event(logger, "cannot load model", logging.ERROR, model=name,
                      version=version, attempt=attempts, error=message)
            return None
        metrics.MODEL_VERSION.labels(name, str(version)).set(1)
        log.event(logger, "loaded model", model=name, version=version,
                  seconds=round(time.monotonic() - start, 2), warmup_requests=warmed)
        return loaded
