"""Several candidate sources merged and ordered by the retrieval version's blend.

`VersionSources` loads the sources of each retrieval version from the model's base path
(`<base>/<version>/assets.extra/candidate_sources.npz`) the first time that version
answers, so the neighbours and blend always belong to the two-tower that answered.
`merge` is a plain function: the service and the tests call it the same way.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from libs import candidate_sources as cs, log, trends

logger = logging.getLogger(__name__)
ASSETS = "assets.extra"
# the trending and popular orders keep this many items: enough for any user's exclusions
TREND_DEPTH = 2000


@dataclass
class Candidate:
    item_id: str
    score: float
    source: str
    source_scores: dict[str, float] = field(default_factory=dict)


class VersionSources:
    """Each served version's CandidateSources, loaded once. A version without them (or
    whose files have not arrived yet) serves the two-tower alone and is looked for again
    after `retry_seconds`."""

    def __init__(self, base_path: str | Path, keep: int = 3, retry_seconds: float = 30.0):
        self.base_path, self.keep, self.retry_seconds = Path(base_path), keep, retry_seconds
        self._loaded: OrderedDict[int, cs.CandidateSources] = OrderedDict()
        self._missing: dict[int, float] = {}
        self._lock = asyncio.Lock()

    def path(self, version: int) -> Path:
        return self.base_path / str(version) / ASSETS / cs.ARTIFACT

    def _load(self, version: int) -> cs.CandidateSources | None:
        path = self.path(version)
        if not path.exists():
            log.event(logger, "retrieval version has no candidate sources; serving the "
                      "two-tower alone", logging.WARNING, version=version, path=str(path))
            return None
        try:
            return cs.CandidateSources.load(path)
        except (OSError, ValueError) as err:
            log.event(logger, "candidate sources unreadable; serving the two-tower alone",
                      logging.ERROR, version=version, error=str(err)[:300])
            return None

    async def get(self, version: int) -> cs.CandidateSources | None:
        if version in self._loaded:
            self._loaded.move_to_end(version)
            return self._loaded[version]
        if time.monotonic() < self._missing.get(version, 0.0):
            return None
        async with self._lock:
            if version not in self._loaded and time.monotonic() >= self._missing.get(
                    version, 0.0):
                found = await asyncio.to_thread(self._load, version)
                if found is None:
                    self._missing[version] = time.monotonic() + self.retry_seconds
                    return None
                self._loaded[version] = found
                while len(self._loaded) > self.keep:
                    self._loaded.popitem(last=False)
        return self._loaded.get(version)


def merge(sources: cs.CandidateSources, wanted: set[str], two_tower: list[tuple[str, float]],
          rated_items: set[str], recent_items: list[str], exclude: set[str],
          orders: cs.TrendOrders, at: int, n: int) -> list[Candidate]:
    """The union of what each wanted source proposes (minus `exclude`), ordered by the
    blend, best `n`. `two_tower` is the model's (item, score) list, already asked for;
    `recent_items` the user's latest ratings."""
    history = sources.indices(rated_items)
    scores = sources.user_scores(history, sources.indices(recent_items))
    proposed: dict[str, str] = {}

    def propose(items, source):
        for item in items:
            if item not in exclude:
                proposed.setdefault(item, source)

    if "two_tower" in wanted:
        propose([item for item, _ in two_tower], "two_tower")
    allowed = np.ones(len(sources.item_ids), bool)
    allowed[sources.indices(exclude)] = False
    for top, name in cs.neighbour_proposals(scores, allowed, wanted):
        propose([sources.item_ids[i] for i in top], name)
    unseen = np.ones(len(orders.item_ids), bool)
    unseen[orders.positions(exclude)] = False
    for top, name in orders.proposals(wanted, unseen):
        propose([orders.item_ids[i] for i in top], name)
    if not proposed:
        return []

    ids = list(proposed)
    trend = orders.rows(ids, missing=at)
    candidates = np.array([sources.index.get(i, -1) for i in ids])
    features = cs.feature_matrix(trend, at, scores, sources.genres, history, candidates)
    blended = sources.blend.score(features)
    tower = dict(two_tower)
    trending_column = trends.WINDOWS.index(trends.TRENDING_DAYS)
    out = []
    for i in np.argsort(-blended, kind="stable")[:n]:
        found = candidates[i] >= 0
        source_scores = {name: float(scores[name][candidates[i]]) if found else 0.0
                         for name in cs.NEIGHBOUR_SOURCES}
        source_scores["trending"] = float(trend[i, trending_column])
        if ids[i] in tower:
            source_scores["two_tower"] = float(tower[ids[i]])
        out.append(Candidate(ids[i], float(blended[i]), proposed[ids[i]], source_scores))
    return out
