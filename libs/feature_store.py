"""The services' feature client: one batched read per request, typed by the feature spec.

Two sources behind one interface:
  FeastFeatures    the Feast online store (SQLite here, Redis in production), read
                   through the thin readers of libs/online_store.py: the default
  CatalogFeatures  the raw CSV tables the feature job lands (no Feast needed)
Missing entities get the spec's defaults and are counted. When the store cannot answer
(e.g. Redis down) every value falls back to the defaults, the result says `degraded`,
and the caller still answers: a feature outage never becomes a client error.
"""
from __future__ import annotations

import asyncio
import collections
import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from libs import feature_spec, log, trends

logger = logging.getLogger(__name__)

MISSING = Counter("recsys_feature_missing_total", "Entities served with default features",
                  ["entity"])
DEGRADED = Counter("recsys_feature_store_errors_total",
                   "Feature reads the store could not answer (defaults were used)")
# Fine buckets around the 5 ms read budget (benchmark.py reads percentiles from them).
READ_SECONDS = Histogram(
    "recsys_feature_read_seconds", "Time a service waited for one request's features",
    ["read"], buckets=(0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.006,
                       0.008, 0.01, 0.015, 0.02, 0.05, 0.1, 0.5))

TRENDS_AS_OF = Gauge("recsys_feature_trends_as_of_seconds", "Moment (newest rating) the "
                     "trending and popular items are computed as of")

# Feast feature services (pipelines/features/definitions.py) the services read.
QUERY_SERVICE = "retrieval_query"
CANDIDATE_SERVICE = "retrieval_candidate"
RANKING_SERVICE = "ranking"
# Catalog size and the popularity fallback's items (trending: libs/trends.py), written by
# the ingestion next to the registry.
SUMMARY_FILE = "serving_summary.json"


class FeatureStoreError(RuntimeError):
    """The feature source cannot be opened at start-up."""


@dataclass
class QueryFeatures:
    user: dict | None  # None: the store does not know this user
    rated_items: set[str] = field(default_factory=set)
    recent_items: list[str] = field(default_factory=list)  # newest first
    degraded: bool = False


@dataclass
class RankingFeatures:
    user: dict
    items: dict[str, list]  # one list per item feature, in the order asked
    degraded: bool = False


def default_user(user_id: str) -> dict:
    return {**feature_spec.default_row(feature_spec.USER_FEATURES), "user_id": user_id}


def _item_columns(item_ids: list[str], lookup) -> dict[str, list]:
    """Columns of item features; `lookup(i, item_id)` gives a row or None (defaults)."""
    default = feature_spec.default_row(feature_spec.ITEM_FEATURES)
    columns = {n: [] for n in feature_spec.ITEM_FEATURES}
    for i, item_id in enumerate(item_ids):
        row = lookup(i, item_id)
        if row is None:
            MISSING.labels("item").inc()
            row = {}
        for n in feature_spec.ITEM_FEATURES:
            value = item_id if n == "item_id" else row.get(n)
            columns[n].append(default[n] if value is None else feature_spec.coerce(n, value))
    return columns


class PopularItems:
    """The popularity fallback's items, and each item's trend row as of `trends_as_of`
    (libs/trends.py TREND_COLUMNS; the candidate sources read them)."""

    def __init__(self, ranked: list[tuple[str, float]],
                 item_trends: dict[str, list] | None = None, trends_as_of: int = 0):
        self.ranked = ranked
        self.item_trends, self.trends_as_of = item_trends or {}, trends_as_of
        TRENDS_AS_OF.set(trends_as_of)

    def set_trends(self, table: dict[str, list], as_of: int) -> None:
        """New trend rows (as of `as_of`) and the popularity order they give."""
        window = trends.WINDOWS.index(trends.TRENDING_DAYS)
        self.ranked = trends.trending({i: row[window] for i, row in table.items()},
                                      {i: row[-2] for i, row in table.items()})
        self.item_trends, self.trends_as_of = table, as_of
        TRENDS_AS_OF.set(as_of)

    async def read_trends(self, item_ids: list[str]) -> bool:
        """Re-read the trend rows of `item_ids` where they change between batch runs;
        a static source has nothing newer (False)."""
        return False

    def popular_items(self, n: int, exclude: set[str] = frozenset()) -> list[tuple[str, float]]:
        out = []
        for item, score in self.ranked:
            if item not in exclude:
                out.append((item, score))
                if len(out) == n:
                    break
        return out


def _rows(path: Path):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f)
    except FileNotFoundError:
        raise FeatureStoreError(f"{path}: not found; land data first "
                                "(make features)") from None


class CatalogFeatures(PopularItems):
    def __init__(self, catalog_dir: str | Path):
        directory = Path(catalog_dir)
        self.users = {r["user_id"]: {n: feature_spec.coerce(n, r[n])
                                     for n in feature_spec.USER_FEATURES}
                      for r in _rows(directory / "users.csv")}
        self.items = {r["item_id"]: r for r in _rows(directory / "items.csv")}
        self.rated: dict[str, set[str]] = collections.defaultdict(set)
        ratings = [(r["user_id"], r["item_id"], int(r["timestamp"]))
                   for r in _rows(directory / "ratings.csv")]
        latest: dict[str, list] = collections.defaultdict(list)
        for user, item, seconds in ratings:
            self.rated[user].add(item)
            latest[user].append((seconds, item))
        # newest first, as the feature store's user_activity.recent_items
        self.recent = {user: [item for _, item in sorted(events, reverse=True)
                              [:feature_spec.RECENT_ITEMS]]
                       for user, events in latest.items()}
        as_of = max((t for *_, t in ratings), default=0) + 2  # as the ingestion's
        super().__init__([])
        self.set_trends(trends.trend_table(((item, t) for _, item, t in ratings), as_of),
                        as_of)
        self.num_items = len(self.items)

    async def query_features(self, user_id: str) -> QueryFeatures:
        user = self.users.get(user_id)
        if user is None:
            MISSING.labels("user").inc()
        return QueryFeatures(user, self.rated.get(user_id, set()),
                             self.recent.get(user_id, []))

    async def ranking_features(self, user_id: str, item_ids: list[str]) -> RankingFeatures:
        user = self.users.get(user_id)
        if user is None:
            MISSING.labels("user").inc()
        return RankingFeatures(user or default_user(user_id),
                               _item_columns(item_ids, lambda _, i: self.items.get(i)))


class _ItemCache:
    """Item features change rarely and every request reads a hundred of them: keep each
    for `ttl` seconds (unknown items too), so a request reads mostly its user. Holds at
    most `size` items: past that the oldest entries go first."""

    def __init__(self, ttl: float, size: int):
        self.ttl, self.size = ttl, size
        self._rows: dict[str, tuple[float, dict | None]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, item_id: str, now: float):
        entry = self._rows.get(item_id)
        return entry if entry and entry[0] > now else None

    def put(self, item_id: str, row: dict | None, now: float) -> None:
        if self.ttl <= 0 or self.size <= 0:
            return
        self._rows.pop(item_id, None)  # re-inserted last: dict order is age order
        while len(self._rows) >= self.size:
            del self._rows[next(iter(self._rows))]
        self._rows[item_id] = (now + self.ttl, row)


class FeastFeatures(PopularItems):
    """Reads Feast's online store through libs/online_store.py's thin readers; what each
    service reads comes from the feature services in Feast's registry."""

    def __init__(self, reader, reads: dict, popular: list[tuple[str, float]],
                 num_items: int, item_cache_seconds: float = 60.0,
                 item_trends: dict | None = None, trends_as_of: int = 0,
                 item_cache_size: int = 100_000):
        super().__init__(popular, item_trends, trends_as_of)
        self.reader, self.num_items = reader, num_items
        self._query, self._user, self._item = reads["query"], reads["user"], reads["item"]
        self.item_cache = _ItemCache(item_cache_seconds, item_cache_size)

    async def _read(self, requests) -> list | None:
        try:
            return await self.reader.read(requests)
        except Exception as err:  # any store failure: defaults, flagged, counted
            DEGRADED.inc()
            log.event(logger, "feature store read failed; using defaults", logging.WARNING,
                      error=f"{type(err).__name__}: {err}"[:300])
            return None

    @staticmethod
    def _typed_user(row: dict | None, user_id: str) -> dict | None:
        values = {n: (row or {}).get(n) for n in feature_spec.USER_FEATURES if n != "user_id"}
        if all(v is None for v in values.values()):
            MISSING.labels("user").inc()
            return None
        return {**default_user(user_id),
                **{n: feature_spec.coerce(n, v) for n, v in values.items() if v is not None}}

    async def query_features(self, user_id: str) -> QueryFeatures:
        with READ_SECONDS.labels("query").time():
            found = await self._read([(self._query, [user_id])])
        if found is None:
            return QueryFeatures(default_user(user_id), degraded=True)
        row = found[0][0] or {}
        return QueryFeatures(self._typed_user(row, user_id),
                             set(row.get("rated_items") or ()),
                             list(row.get("recent_items") or ()))

    async def read_trends(self, item_ids: list[str], chunk: int = 100) -> bool:
        """The trend rows of `item_ids` from their item_popularity rows, which the stream
        keeps current between batch runs, as of the newest rating among them (the
        summary's moment at least): what users rate now, not what they rated at the last
        batch run. In reads the size of a request's (within the store's timeout, requests
        answered in between). False, and the rows kept, when the store cannot answer."""
        from libs.online_store import EntityRead
        read = EntityRead("item_id", tuple(("item_popularity", f) for f in (
            "item_daily_counts", "item_last_rated", "item_rating_count", "item_first_rated")))
        rows = {}
        for start in range(0, len(item_ids), chunk):
            ids = item_ids[start:start + chunk]
            found = await self._read([(read, ids)])
            if found is None:
                return False
            await asyncio.sleep(0)  # the SQLite reader never yields
            rows.update((i, row) for i, row in zip(ids, found[0])
                        if row and row["item_last_rated"] is not None)
        newest = max((row["item_last_rated"] for row in rows.values()), default=0)
        as_of = max(self.trends_as_of, newest + 2)  # as the ingestion's data_time
        self.set_trends({item: trends.trend_row(
            list(row["item_daily_counts"] or ()), row["item_last_rated"], as_of,
            row["item_rating_count"] or 0, row["item_first_rated"] or row["item_last_rated"])
            for item, row in rows.items()}, as_of)
        return True

    async def ranking_features(self, user_id: str, item_ids: list[str]) -> RankingFeatures:
        """One round trip: the user and the items not in the cache."""
        with READ_SECONDS.labels("ranking").time():
            now = time.monotonic()
            known = {}
            for item_id in item_ids:
                entry = self.item_cache.get(item_id, now)
                if entry is not None:
                    known[item_id] = entry[1]
            missing = [i for i in dict.fromkeys(item_ids) if i not in known]
            found = await self._read([(self._user, [user_id]), (self._item, missing)])
        if found is None:  # cached items keep their features; the rest get defaults
            return RankingFeatures(default_user(user_id),
                                   _item_columns(item_ids, lambda _, i: known.get(i)),
                                   degraded=True)
        for item_id, row in zip(missing, found[1]):
            known[item_id] = row
            self.item_cache.put(item_id, row, now)
        return RankingFeatures(self._typed_user(found[0][0], user_id) or default_user(user_id),
                               _item_columns(item_ids, lambda _, i: known.get(i)))

    async def close(self) -> None:
        await self.reader.close()


def _entity_reads(store) -> dict:
    """What the services read, from the feature services in Feast's registry: the query
    tower's user features and history; the ranking model's user and item inputs (only the
    model's inputs: every extra column costs a conversion per candidate)."""
    from libs.online_store import EntityRead

    def read(service: str, join_key: str, only_inputs: bool) -> EntityRead:
        features = []
        for projection in store.get_feature_service(service).feature_view_projections:
            view = store.get_feature_view(projection.name)
            if store.get_entity(view.entities[0]).join_key != join_key:
                continue
            if view.ttl and view.ttl.total_seconds() > 0:
                raise FeatureStoreError(f"feature view {view.name!r} has a TTL; the "
                                        "services' readers do not expire values")
            features += [(view.name, f.name) for f in projection.features
                         if not only_inputs or f.name in feature_spec.BY_NAME]
        return EntityRead(join_key, tuple(features))

    return {"query": read(QUERY_SERVICE, "user_id", False),
            "user": read(RANKING_SERVICE, "user_id", True),
            "item": read(RANKING_SERVICE, "item_id", True)}


def open_feast(config_path: str | Path, store_dir: str | Path,
               item_cache_seconds: float = 60.0, item_cache_size: int = 100_000
               ) -> FeastFeatures:
    """The Feast online store the ingestion job filled (`make features`)."""
    from libs import config as config_lib, online_store
    from libs.feature_store_config import FeatureStoreConfig, repo_config

    store_dir = Path(store_dir)
    summary_path = store_dir / SUMMARY_FILE
    if not summary_path.exists():
        raise FeatureStoreError(f"{store_dir}: no feature store here; run the ingestion "
                                "first (make features)")
    config = config_lib.load(FeatureStoreConfig, config_path)
    from feast import FeatureStore
    reads = _entity_reads(FeatureStore(config=repo_config(config, store_dir)))
    online = config.online_store
    if online.type == "redis":
        reader = online_store.RedisReader(config.project, timeout_seconds=online.timeout_ms
                                          / 1000, **online.redis_address())
    else:
        reader = online_store.SqliteReader(config.project, str(store_dir / online.path))
    summary = json.loads(summary_path.read_text())
    popular = [(item, float(score)) for item, score in summary["popular"]]
    return FeastFeatures(reader, reads, popular, summary["num_items"], item_cache_seconds,
                         summary.get("item_trends"), summary.get("trends_as_of", 0),
                         item_cache_size)


def open_popular(config) -> PopularItems:
    """Only the popularity fallback's items (the router's last), without opening Feast."""
    if config.feature_source == "catalog":
        return CatalogFeatures(config.catalog_dir)
    path = Path(config.feature_store_dir) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise FeatureStoreError(f"{path}: not found; run the ingestion first "
                                "(make features)") from None
    return PopularItems([(item, float(score)) for item, score in summary["popular"]])


def open_features(config) -> CatalogFeatures | FeastFeatures:
    """The feature source a service's config (libs.service.FeatureClientConfig) names."""
    if config.feature_source == "catalog":
        return CatalogFeatures(config.catalog_dir)
    return open_feast(config.feature_store_config, config.feature_store_dir,
                      config.item_cache_seconds, config.item_cache_size)
