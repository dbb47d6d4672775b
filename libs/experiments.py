"""Experiment config: a versioned document of layers, experiments and arms, validated.

A layer is a set of mutually exclusive experiments: each owns a range of the layer's users
(`traffic: [from, to)`, in percent). Layers are independent of each other (each hashes
users with its own salt), so a user can be in one experiment per layer; a serving
parameter may be set by one layer only, so two experiments never fight over it. Within an
experiment, a second hash (the experiment's salt) picks the arm by weight. Hashes are
MurmurHash3 of "<salt>:<user id>": the same in every process, replica and Python version.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from libs import config as config_lib, log, murmur3
from libs.candidate_sources import SOURCES

logger = logging.getLogger(__name__)
BUCKETS = 10_000
STATUSES = ("running", "paused", "stopped")


LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
# A model's version and its version label are one serving parameter: each names what the
# model server answers with, so an arm sets one of them and setting one clears the other.
SAME_PARAMETER = {"retrieval_version_label": "retrieval_version",
                  "ranking_version_label": "ranking_version"}


def parameter(name: str) -> str:
    """The serving parameter a Serving field sets (a label counts as its version)."""
    return SAME_PARAMETER.get(name, name)


def sibling(name: str) -> str | None:
    """The other field of the same parameter (ranking_version <-> ranking_version_label)."""
    versions = {version: label for label, version in SAME_PARAMETER.items()}
    return SAME_PARAMETER.get(name) or versions.get(name)


@dataclass
class Serving:
    """What a request is served with: the config's defaults, then what each arm sets."""
    num_candidates: int = 100
    rank: bool = True  # false: the retrieval order, no ranking model
    retrieval_version: int = 0  # 0: the newest the model server has
    ranking_version: int = 0
    candidates: str = "model"  # or "popular": the most popular items, no retrieval
    # or a version label of the model server's models.config ("stable", "canary")
    retrieval_version_label: str = ""
    ranking_version_label: str = ""
    # candidate sources, comma-separated (libs/candidate_sources.py SOURCES); empty: the
    # candidate service's configured ones
    sources: str = ""

    def validate(self) -> None:
        if self.num_candidates <= 0:
            raise ValueError("field 'num_candidates' must be positive")
        if self.retrieval_version < 0 or self.ranking_version < 0:
            raise ValueError("model versions must be 0 (newest) or positive")
        if self.candidates not in ("model", "popular"):
            raise ValueError(f"field 'candidates' must be model or popular, "
                             f"got {self.candidates!r}")
        unknown = [s for s in self.source_list() if s not in SOURCES]
        if unknown:
            raise ValueError(f"field 'sources': unknown {unknown}; known: "
                             f"{', '.join(SOURCES)}")
        for label, version in SAME_PARAMETER.items():
            value = getattr(self, label)
            if value and not LABEL.fullmatch(value):
                raise ValueError(f"field {label!r} must be a label such as stable or canary "
                                 f"(letters, digits, _ . -), got {value!r}")
            if value and getattr(self, version):
                raise ValueError(f"field {label!r}: set {version} or {label}, not both")

    def source_list(self) -> list[str]:
        return [s.strip() for s in self.sources.split(",") if s.strip()]


def typed_serves(serves: dict, where: str) -> dict:
    """Some Serving fields, checked and typed as Serving's."""
    try:
        typed = config_lib.from_dict(Serving, serves, where)
    except config_lib.ConfigError as err:
        raise ValueError(str(err)) from None
    for label, version in SAME_PARAMETER.items():
        if label in serves and not getattr(typed, label):
            raise ValueError(f"{where}: field {label!r} is empty; to serve the newest "
                             f"version set {version}: 0")
        if label in serves and version in serves:
            raise ValueError(f"{where}: field {label!r}: set {version} or {label}, "
                             "not both")
    return {name: getattr(typed, name) for name in serves}


def served_with(base: Serving, serves: dict) -> Serving:
    """`base` with the fields `serves` sets; a version or label it sets replaces the
    model's other one (an arm's `ranking_version: 3` over defaults' `ranking_version_label:
    stable` serves version 3)."""
    cleared = {other: Serving.__dataclass_fields__[other].default
               for other in map(sibling, serves) if other}
    return dataclasses.replace(base, **{**cleared, **serves})


@dataclass
class Arm:
    name: str
    weight: float
    serves: dict = field(default_factory=dict)  # Serving fields this arm sets

    def validate(self) -> None:
        if not self.name:
            raise ValueError("field 'name' is empty")
        if self.weight <= 0:
            raise ValueError(f"arm {self.name!r}: field 'weight' must be positive")
        self.serves = typed_serves(self.serves, f"arm {self.name!r}: field 'serves'")


@functools.lru_cache(maxsize=1024)  # active() asks on every request
def _instant(text: str, name: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"field {name!r} must be an ISO 8601 time such as "
                         f"2026-12-01T00:00:00Z, got {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"field {name!r} needs a time zone (e.g. a trailing Z), got {text!r}")
    return moment


@dataclass
class Experiment:
    key: str
    arms: list[Arm]
    traffic: list[float] = field(default_factory=lambda: [0.0, 100.0])  # % of the layer
    salt: str = ""  # default: the key; changing it re-buckets the experiment's users
    status: str = "running"  # paused and stopped serve the defaults (allowlist aside)
    start: str = ""  # ISO 8601; empty: started
    stop: str = ""  # ISO 8601; empty: no end
    # request context attribute -> accepted values; every listed attribute must match
    targeting: dict[str, list[str]] = field(default_factory=dict)
    allowlist: dict[str, str] = field(default_factory=dict)  # user id -> arm (QA)

    def validate(self) -> None:
        where = f"experiment {self.key!r}"
        if not self.key:
            raise ValueError("experiment field 'key' is empty")
        if not self.arms:
            raise ValueError(f"{where}: field 'arms' is empty")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: field 'arms': duplicate arm names in {names}")
        if len(self.traffic) != 2 or not 0 <= self.traffic[0] < self.traffic[1] <= 100:
            raise ValueError(f"{where}: field 'traffic' must be [from, to) with "
                             f"0 <= from < to <= 100, got {self.traffic}")
        if self.status not in STATUSES:
            raise ValueError(f"{where}: field 'status' must be one of {', '.join(STATUSES)}, "
                             f"got {self.status!r}")
        start, stop = _instant(self.start, "start"), _instant(self.stop, "stop")
        if start and stop and stop <= start:
            raise ValueError(f"{where}: field 'stop' must be after 'start'")
        for user, arm in self.allowlist.items():
            if arm not in names:
                raise ValueError(f"{where}: field 'allowlist': user {user!r} is sent to "
                                 f"arm {arm!r}, which is not one of {names}")

    def active(self, now: datetime) -> bool:
        start, stop = _instant(self.start, "start"), _instant(self.stop, "stop")
        return (self.status == "running" and (start is None or start <= now)
                and (stop is None or now < stop))

    def targets(self, attributes: dict[str, str]) -> bool:
        return all(attributes.get(name) in values for name, values in self.targeting.items())

    def arm_for(self, user_id: str) -> Arm:
        point = _bucket(self.salt or self.key, user_id) / BUCKETS
        total = sum(a.weight for a in self.arms)
        cumulative = 0.0
        for arm in self.arms:
            cumulative += arm.weight / total
            if point < cumulative:
                return arm
        return self.arms[-1]

    def covers(self, percent: float) -> bool:
        return self.traffic[0] <= percent < self.traffic[1]

    def parameters(self) -> set[str]:
        return {parameter(name) for arm in self.arms for name in arm.serves}


@dataclass
class Layer:
    name: str
    experiments: list[Experiment] = field(default_factory=list)
    salt: str = ""  # default: the name

    def validate(self) -> None:
        if not self.name:
            raise ValueError("layer field 'name' is empty")
        # a stopped experiment serves no one: its range is free for the next one
        ranges = sorted((e.traffic, e.key) for e in self.experiments if e.status != "stopped")
        for (first, a), (second, b) in zip(ranges, ranges[1:]):
            if second[0] < first[1]:
                raise ValueError(f"layer {self.name!r}: experiments {a!r} and {b!r} have "
                                 f"overlapping traffic {first} and {second}")
        allowed = [user for e in self.experiments for user in e.allowlist]
        twice = sorted({user for user in allowed if allowed.count(user) > 1})
        if twice:
            raise ValueError(f"layer {self.name!r}: users {twice} are on the allowlists of "
                             "two of its experiments; a user is in one experiment per layer")

    def percent(self, user_id: str) -> float:
        return _bucket(self.salt or self.name, user_id) * 100 / BUCKETS


@dataclass
class Shadow:
    """A share of requests is also answered, after the client's answer, with these Serving
    fields over the ones the request was served with; the two answers are compared and
    logged (shadow.py), and the client never sees the shadow's."""
    share: float = 0.0  # percent of requests
    serves: dict = field(default_factory=dict)

    def validate(self) -> None:
        if not 0 <= self.share <= 100:
            raise ValueError(f"shadow: field 'share' must be 0..100 (percent), got {self.share}")
        self.serves = typed_serves(self.serves, "shadow: field 'serves'")
        if self.share and not self.serves:
            raise ValueError("shadow: field 'serves' is empty: the shadow would repeat the "
                             "request as it was served")


@dataclass(frozen=True)
class Assignment:
    layer: str
    experiment: str
    arm: str


@dataclass
class ExperimentConfig:
    version: str
    layers: list[Layer] = field(default_factory=list)
    defaults: Serving = field(default_factory=Serving)
    shadow: Shadow = field(default_factory=Shadow)

    def validate(self) -> None:
        if not self.version:
            raise ValueError("field 'version' is empty")
        for kind, names in (("layer", [layer.name for layer in self.layers]),
                            ("experiment", [e.key for layer in self.layers
                                            for e in layer.experiments])):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"duplicate {kind} names: {duplicates}")
        owner = {}
        for layer in self.layers:
            for experiment in layer.experiments:
                for name in experiment.parameters():
                    if owner.setdefault(name, layer.name) != layer.name:
                        what = (f"{name!r} (the model's version or version label)"
                                if name in SAME_PARAMETER.values() else repr(name))
                        raise ValueError(
                            f"serving parameter {what} is set in layers "
                            f"{owner[name]!r} and {layer.name!r}; a parameter belongs to one "
                            "layer, so two experiments never set it for the same user")

    def resolve(self, user_id: str, attributes: dict[str, str] | None = None,
                now: datetime | None = None) -> tuple[Serving, list[Assignment]]:
        """What this user's request is served with, and the arm they are in per layer."""
        attributes = attributes or {}
        now = now or datetime.now(timezone.utc)
        settings, assignments = {}, []
        for layer in self.layers:
            arm, experiment = self._arm_in(layer, user_id, attributes, now)
            if arm:
                settings.update(arm.serves)
                assignments.append(Assignment(layer.name, experiment.key, arm.name))
        return served_with(self.defaults, settings), assignments

    @staticmethod
    def _arm_in(layer: Layer, user_id: str, attributes: dict[str, str], now: datetime):
        for experiment in layer.experiments:
            if experiment.status != "stopped" and user_id in experiment.allowlist:
                chosen = experiment.allowlist[user_id]
                return next(a for a in experiment.arms if a.name == chosen), experiment
        percent = layer.percent(user_id)
        for experiment in layer.experiments:
            if experiment.status != "stopped" and experiment.covers(percent):
                if experiment.active(now) and experiment.targets(attributes):
                    return experiment.arm_for(user_id), experiment
                break
        return None, None


def _bucket(salt: str, user_id: str) -> int:
    return murmur3.hash32(f"{salt}:{user_id}") % BUCKETS


class ExperimentSource:
    """The running config; reloaded when the file changes, kept when the new one is bad."""

    def __init__(self, path: str):
        self.path = path
        self.current = config_lib.load(ExperimentConfig, path)
        self._mtime = os.stat(path).st_mtime

    def reload_if_changed(self) -> bool:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError as err:
            log.event(logger, "experiment config unreadable; keeping the running one",
                      logging.ERROR, error=str(err))
            return False
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            new = config_lib.load(ExperimentConfig, self.path)
        except config_lib.ConfigError as err:
            log.event(logger, "experiment config rejected; keeping the running one",
                      logging.ERROR, error=str(err), running_version=self.current.version)
            return False
        self.current = new
        log.event(logger, "experiment config loaded", version=new.version)
        return True
