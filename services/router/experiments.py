"""Experiment config (validated document) and deterministic arm assignment."""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field

from libs import config as config_lib, log

logger = logging.getLogger(__name__)
BUCKETS = 10_000


@dataclass
class Arm:
    name: str
    weight: int
    num_candidates: int = 100
    rank: bool = True
    retrieval_version: int = 0  # 0 = newest
    ranking_version: int = 0

    def validate(self) -> None:
        if not self.name:
            raise ValueError("arm field 'name' is empty")
        if self.weight <= 0:
            raise ValueError(f"arm {self.name!r}: field 'weight' must be positive")
        if self.num_candidates <= 0:
            raise ValueError(f"arm {self.name!r}: field 'num_candidates' must be positive")


@dataclass
class ExperimentConfig:
    version: str
    name: str
    salt: str
    arms: list[Arm] = field(default_factory=list)

    def validate(self) -> None:
        if not self.arms:
            raise ValueError("field 'arms' is empty")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"field 'arms': duplicate arm names in {names}")
        if not self.version or not self.name or not self.salt:
            raise ValueError("fields 'version', 'name' and 'salt' must not be empty")

    def assign(self, user_id: str) -> Arm:
        """Same user, same salt, same weights -> same arm, in any process."""
        digest = hashlib.sha256(f"{self.salt}:{self.name}:{user_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") % BUCKETS / BUCKETS
        total = sum(a.weight for a in self.arms)
        cumulative = 0.0
        for arm in self.arms:
            cumulative += arm.weight / total
            if point < cumulative:
                return arm
        return self.arms[-1]


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
