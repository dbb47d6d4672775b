"""Changes to the experiment document, as the admin API makes them: plain functions the
gRPC servicer (admin_service.py) calls and tests call directly.

The document file stays the one source of truth every router replica polls. A change is
read-modify-write under a file lock (replicas may share the file), validated as a whole
(an invalid result is refused and the file is untouched), written atomically with a new
version, and appended to the audit log (who, when, before, after).
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from libs import config as config_lib, files
from libs.experiments import ExperimentConfig, sibling, typed_serves

ROLES = ("editor", "viewer")
# what decides which users are in which arm: changing it on a running experiment
# moves users between arms mid-flight, which biases its analysis
BUCKETING = ("arms", "traffic", "salt", "layer")


class AdminError(Exception):
    """A refused request; `code` is the gRPC status name the servicer answers with."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Token:
    who: str
    sha256: str  # of the token: the file never holds the token itself
    role: str = "editor"

    def validate(self) -> None:
        if not self.who:
            raise ValueError("field 'who' is empty")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"{self.who}: field 'sha256' must be 64 lowercase hex digits")
        if self.role not in ROLES:
            raise ValueError(f"{self.who}: field 'role' must be one of {', '.join(ROLES)}")


@dataclass
class AdminTokens:
    tokens: list[Token] = field(default_factory=list)

    def validate(self) -> None:
        names = [t.who for t in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError(f"field 'tokens': duplicate names in {names}")

    @staticmethod
    def digest(token: str) -> str:
        """What the tokens file holds for a token."""
        return hashlib.sha256(token.encode()).hexdigest()

    def editor(self, token: str) -> str:
        """Who holds this token, if they may change experiments; AdminError otherwise."""
        digest = self.digest(token) if token else ""
        holder = next((t for t in self.tokens if t.sha256 == digest), None)
        if holder is None:
            raise AdminError("UNAUTHENTICATED", "a known admin token is required "
                             "(metadata 'authorization: Bearer <token>')")
        if holder.role != "editor":
            raise AdminError("PERMISSION_DENIED",
                             f"{holder.who} is a {holder.role}; changes need an editor")
        return holder.who


def new_version() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _bucketing(layer: str, experiment: dict) -> tuple:
    arms = [(a["name"], float(a["weight"])) for a in experiment.get("arms", [])]
    return (arms, list(experiment.get("traffic", [0, 100])),
            experiment.get("salt") or experiment["key"], layer)


class ExperimentDocument:
    def __init__(self, path: str | Path, audit_path: str | Path):
        self.path, self.audit_path = Path(path), Path(audit_path)

    def read(self) -> dict:
        return yaml.safe_load(self.path.read_text()) or {}

    def experiments(self) -> tuple[str, list[tuple[str, dict]]]:
        doc = self.read()
        return doc.get("version", ""), [(layer["name"], e) for layer in doc.get("layers", [])
                                        for e in layer.get("experiments", [])]

    def get(self, key: str) -> tuple[str, dict]:
        found = [(layer, e) for layer, e in self.experiments()[1] if e["key"] == key]
        if not found:
            raise AdminError("NOT_FOUND", f"no experiment {key!r}")
        return found[0]

    def create(self, who: str, layer: str, experiment: dict,
               expected_version: str = "") -> tuple[str, str, dict]:
        def change(doc):
            if any(e["key"] == experiment["key"] for _, e in _all(doc)):
                raise AdminError("ALREADY_EXISTS", f"experiment {experiment['key']!r} "
                                 "exists; update it instead")
            _layer(doc, layer, create=True)["experiments"].append(experiment)
            return None
        return self._experiment_change(who, "create", experiment["key"], change,
                                       expected_version)

    def update(self, who: str, layer: str, experiment: dict, force: bool = False,
               expected_version: str = "") -> tuple[str, str, dict]:
        def change(doc):
            old_layer, old = _find(doc, experiment["key"])
            if old.get("status", "running") == "running" and not force and \
                    _bucketing(old_layer, old) != _bucketing(layer, experiment):
                raise AdminError(
                    "FAILED_PRECONDITION",
                    f"experiment {experiment['key']!r} is running: changing its "
                    f"{', '.join(BUCKETING)} re-buckets users (some change arm mid-flight, "
                    "which biases the analysis); pass force to do it anyway, or stop it "
                    "and create a new one")
            _layer(doc, old_layer)["experiments"].remove(old)
            _layer(doc, layer, create=True)["experiments"].append(experiment)
            return {"layer": old_layer, **old}
        return self._experiment_change(who, "update", experiment["key"], change,
                                       expected_version)

    def set_status(self, who: str, key: str, status: str,
                   expected_version: str = "") -> tuple[str, str, dict]:
        allowed_from = {"paused": ("running",), "running": ("paused",),
                        "stopped": ("running", "paused")}[status]

        def change(doc):
            layer, experiment = _find(doc, key)
            current = experiment.get("status", "running")
            if current not in allowed_from:
                raise AdminError("FAILED_PRECONDITION",
                                 f"experiment {key!r} is {current}; cannot make it {status}")
            before = {"layer": layer, **copy.deepcopy(experiment)}
            experiment["status"] = status
            return before
        action = {"paused": "pause", "running": "resume", "stopped": "stop"}[status]
        return self._experiment_change(who, action, key, change, expected_version)

    def switch_defaults(self, who: str, settings: dict,
                        expected_version: str = "") -> tuple[str, dict]:
        """Blue/green: what everyone outside an experiment is served (e.g. the model
        versions, or labels) changes for all of a router's traffic at once."""
        try:
            typed_serves(settings, "field 'defaults'")  # not both a version and a label
        except ValueError as err:
            raise AdminError("INVALID_ARGUMENT", str(err)) from None

        def change(doc):
            before = dict(doc.get("defaults", {}))
            # a model's version and label are one setting: the one given replaces both
            replaced = {sibling(name) for name in settings}
            doc["defaults"] = {**{k: v for k, v in before.items() if k not in replaced},
                               **settings}
            return before
        return self._change(who, "switch", "defaults", change, expected_version,
                            lambda doc: doc["defaults"])

    def set_shadow(self, who: str, share: float, settings: dict,
                   expected_version: str = "") -> tuple[str, dict]:
        def change(doc):
            before = doc.get("shadow")
            doc["shadow"] = {"share": share, "serves": settings}
            return before
        return self._change(who, "shadow", "shadow", change, expected_version,
                            lambda doc: doc["shadow"])

    def unpin(self, who: str, user: str) -> list[str]:
        """Takes a user off every allowlist (an erasure): one change, audited without
        the user's id. The keys of the experiments that pinned them."""
        def change(doc):
            pinned = []
            for _, experiment in _all(doc):
                if user in experiment.get("allowlist", {}):
                    del experiment["allowlist"][user]
                    pinned.append(experiment["key"])
            return pinned
        pinned = list(self.pinned(user))
        if pinned:  # audited: which experiments pinned someone, not whom
            self._change(who, "unpin", "allowlists", change, "", lambda doc: [])
        return pinned

    def pinned(self, user: str) -> dict[str, str]:
        """experiment key -> arm, of the experiments whose allowlist names the user."""
        return {e["key"]: e["allowlist"][user] for _, e in self.experiments()[1]
                if user in e.get("allowlist", {})}

    def _experiment_change(self, who, action, key, change, expected_version):
        def after(doc):
            layer, experiment = _find(doc, key)
            return {"layer": layer, **experiment}
        version, audited = self._change(who, action, key, change, expected_version, after)
        layer = audited.pop("layer")
        return version, layer, audited

    def _change(self, who, action, subject, change, expected_version, after):
        try:
            return self._change_locked(who, action, subject, change, expected_version, after)
        except OSError as err:  # e.g. a read-only mount: say so, change nothing
            raise AdminError("FAILED_PRECONDITION", f"cannot change the experiment "
                             f"document {self.path}: {err.strerror or err}") from None

    def _change_locked(self, who, action, subject, change, expected_version, after):
        with self._locked():
            doc = self.read()
            old_version = doc.get("version", "")
            if expected_version and expected_version != old_version:
                raise AdminError("FAILED_PRECONDITION",
                                 f"the config is at version {old_version!r}, not "
                                 f"{expected_version!r}: re-read it and retry")
            before = change(doc)
            doc["version"] = new_version()
            try:
                config_lib.from_dict(ExperimentConfig, doc, "the changed document")
            except config_lib.ConfigError as err:
                raise AdminError("INVALID_ARGUMENT", str(err)) from None
            self._write(doc)
            result = after(doc)
            self._audit({"time": time.time(), "who": who, "action": action,
                         "subject": subject, "before": before, "after": result,
                         "config_version_before": old_version,
                         "config_version_after": doc["version"]})
            return doc["version"], result

    def _locked(self):
        return files.locked(Path(f"{self.path}.lock"))

    def _write(self, doc: dict) -> None:
        files.replace_atomically(self.path, yaml.safe_dump(doc, sort_keys=False))

    def _audit(self, entry: dict) -> None:
        self.audit_path.parent.mkdir(parents=True, exist_ok=True)
        files.append_line(self.audit_path, json.dumps(entry))


def _all(doc: dict):
    return [(layer["name"], e) for layer in doc.get("layers", [])
            for e in layer.get("experiments", [])]


def _find(doc: dict, key: str) -> tuple[str, dict]:
    for layer, experiment in _all(doc):
        if experiment["key"] == key:
            return layer, experiment
    raise AdminError("NOT_FOUND", f"no experiment {key!r}")


def _layer(doc: dict, name: str, create: bool = False) -> dict:
    for layer in doc.setdefault("layers", []):
        if layer["name"] == name:
            layer.setdefault("experiments", [])
            return layer
    if not create:
        raise AdminError("NOT_FOUND", f"no layer {name!r}")
    doc["layers"].append({"name": name, "experiments": []})
    return doc["layers"][-1]
