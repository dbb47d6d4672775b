"""Online features for the services, typed and defaulted by the feature spec.

Reads the catalog the data preparation writes (users.csv, items.csv, ratings.csv) into
memory: user and item features, each user's rated items, and item popularity. Missing
entities get the spec's defaults and are counted, never an error to the caller.
"""
from __future__ import annotations

import collections
import csv
from pathlib import Path

from prometheus_client import Counter

from libs import feature_spec

MISSING = Counter("recsys_feature_missing_total", "Entities served with default features",
                  ["entity"])


class FeatureStoreError(RuntimeError):
    pass


def _rows(path: Path):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f)
    except FileNotFoundError:
        raise FeatureStoreError(f"{path}: not found; run the training pipeline first "
                                "(it writes the catalog)") from None


class CatalogFeatures:
    def __init__(self, catalog_dir: str | Path):
        directory = Path(catalog_dir)
        self.users = {r["user_id"]: {n: feature_spec.coerce(n, r[n])
                                     for n in feature_spec.USER_FEATURES}
                      for r in _rows(directory / "users.csv")}
        self.items, self.titles = {}, {}
        for r in _rows(directory / "items.csv"):
            self.items[r["item_id"]] = {n: feature_spec.coerce(n, r[n])
                                        for n in feature_spec.ITEM_FEATURES}
            self.titles[r["item_id"]] = r["title"]
        self.rated: dict[str, set[str]] = collections.defaultdict(set)
        counts: collections.Counter = collections.Counter()
        for r in _rows(directory / "ratings.csv"):
            self.rated[r["user_id"]].add(r["item_id"])
            counts[r["item_id"]] += 1
        top = counts.most_common()
        most = top[0][1] if top else 1
        self.popular = [(item, count / most) for item, count in top]

    def user(self, user_id: str) -> dict | None:
        features = self.users.get(user_id)
        if features is None:
            MISSING.labels("user").inc()
        return features

    def item_columns(self, item_ids: list[str]) -> dict[str, list]:
        """Item features as columns (one list per feature), defaults for unknown items."""
        default = feature_spec.default_row(feature_spec.ITEM_FEATURES)
        columns = {n: [] for n in feature_spec.ITEM_FEATURES}
        for item_id in item_ids:
            row = self.items.get(item_id)
            if row is None:
                MISSING.labels("item").inc()
                row = {**default, "item_id": item_id}
            for n in feature_spec.ITEM_FEATURES:
                columns[n].append(row[n])
        return columns

    def rated_items(self, user_id: str) -> set[str]:
        return self.rated.get(user_id, set())

    def popular_items(self, n: int, exclude: set[str] = frozenset()) -> list[tuple[str, float]]:
        out = []
        for item, score in self.popular:
            if item not in exclude:
                out.append((item, score))
                if len(out) == n:
                    break
        return out
