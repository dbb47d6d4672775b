"""Each retrieval version's candidate index (libs/candidate_index.py), loaded off the
request path.

A background poll loads the indexes of the newest versions under the model's base path
as soon as their files are complete, usually before the model server serves them; a
request never waits for a load: it gets None and the service asks the model for that
version's own top-k instead. Catalogs of at least `ann_min_items` are searched through
the IVF index, smaller ones exactly.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from prometheus_client import Histogram

from libs import candidate_index, log
from libs.candidate_index import CandidateIndex

logger = logging.getLogger(__name__)
SEARCH_SECONDS = Histogram(
    "recsys_candidate_search_seconds", "One top-k search of a version's candidate index",
    ["kind"], buckets=(0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.005, 0.01,
                       0.05))


class VersionIndexes:
    def __init__(self, base_path: str | Path, ann_min_items: int, probes: int,
                 keep: int = 3, retry_seconds: float = 10.0):
        self.base_path = Path(base_path)
        self.ann_min_items, self.probes = ann_min_items, probes
        self.keep, self.retry_seconds = keep, retry_seconds
        self._loaded: dict[int, CandidateIndex] = {}
        self._failed: dict[int, float] = {}  # version -> when it may be tried again
        self._loading: set[int] = set()

    def path(self, version: int) -> Path:
        return self.base_path / str(version) / "assets.extra" / candidate_index.DIRECTORY

    def get(self, version: int) -> CandidateIndex | None:
        """The version's index if loaded; otherwise None, and a load is started."""
        found = self._loaded.get(version)
        if found is None:
            self._start(version)
        return found

    def _start(self, version: int) -> None:
        if version in self._loading or self._failed.get(version, 0) > time.monotonic():
            return
        self._loading.add(version)
        asyncio.get_running_loop().create_task(self._load(version))

    async def _load(self, version: int) -> None:
        path = self.path(version)
        try:
            if not (path / candidate_index.META).exists():
                raise FileNotFoundError(f"{path}: no candidate index")
            size = (await asyncio.to_thread(candidate_index.read_meta, path))["items"]
            found = await asyncio.to_thread(CandidateIndex.load, path,
                                            size >= self.ann_min_items, self.probes)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            first = version not in self._failed  # said once per version, then retried
            self._failed[version] = time.monotonic() + self.retry_seconds
            log.event(logger, "no usable candidate index; the model's own top-k serves "
                      "this version", logging.WARNING if first else logging.DEBUG,
                      version=version, error=f"{type(err).__name__}: {err}"[:300])
        else:
            self._loaded[version] = found
            self._failed.pop(version, None)
            log.event(logger, "candidate index loaded", version=version, items=len(found),
                      search="ivf" if found.approximate else "exact")
            for old in sorted(self._loaded)[:-self.keep]:
                del self._loaded[old]
        finally:
            self._loading.discard(version)

    def newest(self) -> list[int]:
        versions = [int(p.name) for p in self.base_path.glob("*") if p.name.isdigit()]
        return sorted(versions)[-self.keep:]

    async def load_newest(self) -> None:
        """Loads the newest versions' indexes that are not loaded yet (and waits)."""
        for version in self.newest():
            if version not in self._loaded and version not in self._loading \
                    and self._failed.get(version, 0) <= time.monotonic():
                self._loading.add(version)
                await self._load(version)

    async def poll(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.load_newest()
            except Exception:  # a poll that fails must not stop the next one
                logger.exception("candidate index poll failed")

    def search(self, index: CandidateIndex, query, k: int, exclude) -> list[tuple[str, float]]:
        with SEARCH_SECONDS.labels("ivf" if index.approximate else "exact").time():
            return index.search(query, k, exclude)
