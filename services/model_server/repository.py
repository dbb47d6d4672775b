"""The model repository as TF Serving reads it: `<base_path>/<integer version>/saved_model.pb`.

A poller loads versions as they appear (once their files have stopped changing, since a
Pusher copies files in place) and unloads versions the policy no longer wants. What
serves (the loaded versions and the version labels) is replaced as one object, so a
request that already holds a version finishes on it while new requests see the new
one, and never sees a label pointing at a version that is not loaded.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

from libs import log, metrics
from libs.model_config import ModelSource

__all__ = ["ModelRepository", "ModelSource", "LoadedVersion", "Signature", "NotFound",
           "UnknownLabel", "LabelNotReady"]
logger = logging.getLogger(__name__)


MAX_LOAD_ATTEMPTS = 3


class NotFound(LookupError):
    """Unknown model or version (TF Serving: NOT_FOUND)."""


class UnknownLabel(LookupError):
    """A label the config does not assign (TF Serving: INVALID_ARGUMENT)."""


class LabelNotReady(LookupError):
    """A label the config assigns to a version that has not loaded yet."""


SERVE_TAG = "serve"  # the meta graph TF Serving loads by default


@dataclass(frozen=True)
class Signature:
    """One SignatureDef run as TF Serving runs it: one Session callable fed and fetched
    by the def's tensor names (a TF2 concrete function costs 0.3 ms more per query-tower
    call here, in Python argument handling; the graph itself runs in 0.07 ms)."""
    inputs: dict[str, meta_graph_pb2.TensorInfo]  # alias -> dtype, shape, tensor name
    outputs: tuple[str, ...]
    _run: Callable  # feeds in the order of `inputs`, fetches in the order of `outputs`

    def __call__(self, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self._run(*(arrays[k] for k in self.inputs))))


@dataclass
class LoadedVersion:
    name: str
    version: int
    path: Path
    signatures: dict[str, Signature]
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]
    loaded_at: float

    def signature(self, name: str) -> Signature | None:
        return self.signatures.get(name)


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


def load_version(name: str, version: int, path: Path,
                 session_config: tf.compat.v1.ConfigProto | None = None) -> LoadedVersion:
    """The SavedModel's `serve` graph in a Session of its own, with a callable per
    signature; only dense tensors, as the Predict API sends them. The callables hold the
    session: it closes when the last request holding this version lets go of it."""
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=session_config)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.load(session, [SERVE_TAG], str(path))
    defs = {k: v for k, v in meta_graph.signature_def.items() if not k.startswith("__")}
    signatures = {}
    for key, signature_def in defs.items():
        for alias, info in [*signature_def.inputs.items(), *signature_def.outputs.items()]:
            if info.WhichOneof("encoding") != "name":
                raise ValueError(f"signature {key!r}: tensor {alias!r} is not dense; "
                                 "this server serves dense tensors only")
        inputs = {k: signature_def.inputs[k] for k in sorted(signature_def.inputs)}
        outputs = tuple(sorted(signature_def.outputs))
        # TF Serving's own path (Session::MakeCallable / RunCallable). The public
        # make_callable hands any feed to Session.run's Python feed handling: 0.15 ms of
        # the query tower's 0.22 ms per call; tf-keras' backend uses this one too.
        run = session._make_callable_from_options(config_pb2.CallableOptions(
            feed=[info.name for info in inputs.values()],
            fetch=[signature_def.outputs[k].name for k in outputs]))
        signatures[key] = Signature(inputs, outputs, run)
    return LoadedVersion(name, version, path, signatures, defs, time.time())


@dataclass(frozen=True)
class Served:
    """What answers requests, replaced as one object by each poll."""
    versions: dict[str, dict[int, LoadedVersion]]
    labels: dict[str, dict[str, int]]  # in force: each names a loaded version
    # the config's labels while they wait for a version to load (the ones in force stay)
    waiting: dict[str, dict[str, int]] = field(default_factory=dict)


class ModelRepository:
    def __init__(self, sources: list[ModelSource], settle_seconds: float = 1.0,
                 warm_up: Callable[[LoadedVersion], int] | None = None,
                 session_config: tf.compat.v1.ConfigProto | None = None):
        self.sources = {s.name: s for s in sources}
        self.session_config = session_config
        self.settle_seconds = settle_seconds
        self.warm_up = warm_up  # run on each new version before it serves
        self._served = Served({s.name: {} for s in sources}, {})
        self._labels_ready = False  # the config's labels have been in force once
        # (model, version) -> (load attempts, last error); retried MAX_LOAD_ATTEMPTS times
        self._failed: dict[tuple[str, int], tuple[int, str]] = {}
        self._waiting_reported: list[str] = []
        self._lock = threading.Lock()  # one poll at a time; readers never lock

    def reconfigure(self, sources: list[ModelSource]) -> None:
        """A new models.config; the next poll loads, unloads and moves labels for it."""
        self.sources = {s.name: s for s in sources}

    # -- reading (request path) -------------------------------------------------------
    def get(self, name: str, version: int = 0, label: str = "") -> LoadedVersion:
        served = self._served  # one read: versions and labels of the same poll
        versions = served.versions.get(name)
        if versions is None:
            raise NotFound(f"Servable not found for request: Latest({name})")
        if label:
            labelled = served.labels.get(name, {}).get(label)
            if labelled is None:
                waiting = served.waiting.get(name, {}).get(label)
                if waiting is not None:
                    raise LabelNotReady(
                        f"version label {label!r} of model {name!r} is assigned to version "
                        f"{waiting}, which is not currently available for inference")
                raise UnknownLabel(f"Unrecognized servable version label: {label}")
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
        """Every model has a version loaded and the config's labels have been in force
        (a fresh replica takes no traffic while `stable` still means nothing)."""
        served = self._served
        return self._labels_ready and all(served.versions.get(n) for n in self.sources)

    def status(self, name: str) -> dict[int, str]:
        if name not in self.sources:
            raise NotFound(f"Could not find any versions of model {name}")
        states = {v: "AVAILABLE" for v in self._served.versions.get(name, {})}
        states.update({v: f"END: {err}" for (n, v), (_, err) in self._failed.items()
                       if n == name and v not in states})
        return states

    # -- polling ----------------------------------------------------------------------
    def poll(self) -> None:
        with self._lock:
            sources, old = self.sources, self._served
            versions, wanted = {}, {}
            for name, source in sources.items():
                wanted[name] = wanted_versions(source, available_versions(
                    source.base_path, self.settle_seconds))
                versions[name] = self._load_wanted(name, source, wanted[name],
                                                   old.versions.get(name, {}))
                # a version a label in force names stays until the label moves (below)
                for version in old.labels.get(name, {}).values():
                    if version in old.versions.get(name, {}):
                        versions[name].setdefault(version, old.versions[name][version])
            labels = {name: dict(source.labels) for name, source in sources.items()
                      if source.labels}
            # as TF Serving: a label may only name a version that is available (and here
            # one its policy loads); until then the labels in force stay, all of them:
            # one config change, one move
            missing = [(name, label, version) for name, named in labels.items()
                       for label, version in named.items()
                       if version not in wanted[name] or version not in versions[name]]
            waiting = {}
            if missing:
                waiting, labels = labels, {n: old.labels[n] for n in old.labels if n in sources}
            else:
                self._labels_ready = True
            for name in sources:
                keep = set(wanted[name]) | set(labels.get(name, {}).values())
                versions[name] = {v: loaded for v, loaded in versions[name].items()
                                  if v in keep}
            self._served = Served(versions, labels, waiting)  # atomic swap
            self._report(old, self._served, missing, sources, wanted)

    def _load_wanted(self, name: str, source: ModelSource, want: list[int],
                     current: dict[int, LoadedVersion]) -> dict[int, LoadedVersion]:
        updated = {v: current[v] for v in want if v in current}
        for version in want:
            attempts, _ = self._failed.get((name, version), (0, ""))
            if version in updated or attempts >= MAX_LOAD_ATTEMPTS:
                continue
            loaded = self._load(name, version, source.base_path / str(version))
            if loaded:
                updated[version] = loaded
        return updated

    def _report(self, old: Served, new: Served, missing: list[tuple[str, str, int]],
                sources: dict[str, ModelSource], wanted: dict[str, list[int]]) -> None:
        for name, versions in old.versions.items():
            for version in set(versions) - set(new.versions.get(name, {})):
                metrics.MODEL_VERSION.remove(name, str(version))
                log.event(logger, "unloaded model", model=name, version=version)
        if new.labels != old.labels:
            log.event(logger, "version labels moved", labels=new.labels)
        reasons = [f"Request to assign label {label!r} to version {version} of model "
                   f"{name}, which is not currently available for inference "
                   f"({self._why_not_loaded(sources[name], version, wanted[name])})"
                   for name, label, version in missing]
        if reasons and reasons != self._waiting_reported:
            log.event(logger, "version labels wait for their versions; the labels in "
                      "force stay", logging.WARNING, code="FAILED_PRECONDITION",
                      reasons=reasons, labels=new.labels)
        self._waiting_reported = reasons

    def _why_not_loaded(self, source: ModelSource, version: int, wanted: list[int]) -> str:
        attempts, error = self._failed.get((source.name, version), (0, ""))
        if attempts:
            return f"it failed to load: {error}"
        if source.policy == "all" or version in source.versions or version in wanted:
            return ("its files are not complete in base_path yet (a version loads once "
                    "they stop changing)")
        return "its version policy does not load it"

    def _load(self, name: str, version: int, path: Path) -> LoadedVersion | None:
        start = time.monotonic()
        try:
            loaded = load_version(name, version, path, self.session_config)
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
