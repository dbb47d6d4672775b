"""Candidate sources beside the two-tower model, and the learned blend that orders them.

On time-ordered data most of what users rate next is either trending or close to what
they rated before, so the candidate service merges several sources and orders their
union with one small listwise-trained scorer (the blend). What a retrieval model version
needs for that is written by its Trainer next to the SavedModel, in
`<version>/assets.extra/candidate_sources.npz` (TF Serving ignores the folder), and read
for exactly the version whose two-tower answered, so sources never mix across versions:

  item_ids                        the order of every per-item array below
  item_to_item_index / _weight    each item's nearest items by co-occurrence (cosine over
                                  the users who rated both)
  ease_index / _weight            each item's largest EASE weights (Steck 2019)
  genres                          item x genre multi-hot, for the genre affinity
  blend_mean / _scale             how FEATURES are standardised
  blend_weight                    the blend's linear part
  blend_hidden_weight / _bias,    its one ReLU layer (optional: without them the blend
  blend_output_weight             is linear)

Item trends (ratings per window, age) are not versioned: they come from the feature
store at request time (`trend_rows`). Pure numpy: the training environment writes the
artifact, the serving environment reads it, both compute features here.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from libs import trends

ARTIFACT = "candidate_sources.npz"
SOURCES = ("two_tower", "item_to_item", "ease", "trending", "popular")
# Candidates each extra source proposes per request (the two-tower proposes as many as
# were asked for); trending is taken over each of TRENDING_WINDOWS.
QUOTAS = {"item_to_item": 50, "item_to_item_recent": 30, "ease": 80, "trending": 50,
          "popular": 30}
TRENDING_WINDOWS = (3, 7, 14, 30)
NEIGHBOUR_SOURCES = ("item_to_item", "ease")
# Each neighbour source scores a candidate twice: from everything the user rated, and
# from their latest ratings (feature_spec.RECENT_ITEMS; the feature store's
# user_activity.recent_items): what they are watching now.
SCORES = (*NEIGHBOUR_SOURCES, *(f"{n}_recent" for n in NEIGHBOUR_SOURCES))
FEATURES = (*(f"log_count_{w}d" for w in trends.WINDOWS), "log_count_all", "log_age_days",
            *SCORES, "genre_affinity")


class SourcesError(ValueError):
    """An artifact that cannot be used (missing arrays, mismatched shapes)."""


def trend_rows(table: dict[str, list], item_ids, missing: int) -> np.ndarray:
    """[len(item_ids), trends.TREND_COLUMNS] from a table item -> trend row; an item the
    table lacks has no ratings and is new (first rated at `missing`)."""
    rows = np.zeros((len(item_ids), len(trends.TREND_COLUMNS)), np.float64)
    for i, item in enumerate(item_ids):
        found = table.get(item)
        if found is not None:
            rows[i] = found
        else:
            rows[i, -1] = missing
    return rows


def user_scores(neighbours: dict[str, tuple[np.ndarray, np.ndarray]], history: np.ndarray,
                recent: np.ndarray, num_items: int) -> dict[str, np.ndarray]:
    """Every catalog item's SCORES for one user (history and recent: item indices)."""
    out = {}
    for name in NEIGHBOUR_SOURCES:
        out[name] = neighbour_scores(*neighbours[name], history, num_items)
        out[f"{name}_recent"] = neighbour_scores(*neighbours[name], recent, num_items)
    return out


def feature_matrix(trend: np.ndarray, at: int, scores: dict[str, np.ndarray],
                   genres: np.ndarray, history: np.ndarray,
                   candidates: np.ndarray) -> np.ndarray:
    """The blend's inputs, one row per candidate, in FEATURES order. `candidates` are
    item indices, -1 for an item the neighbours do not know (its scores are 0); `trend`
    their trend rows as of `at`."""
    known = candidates >= 0
    safe = np.where(known, candidates, 0)
    counts = np.log1p(np.maximum(trend[:, :-1], 0))
    age = np.log1p(np.maximum(at - trend[:, -1], 0) / trends.DAY)
    columns = [counts, age]
    for name in SCORES:
        value = np.where(known, scores[name][safe], 0.0)
        columns.append(np.log1p(np.maximum(value, 0)) if name.startswith("item_to_item")
                       else value)
    columns.append(np.where(known, genre_affinity(genres, history, safe), 0.0))
    return np.column_stack(columns)


def neighbour_proposals(scores: dict[str, np.ndarray], allowed: np.ndarray,
                        wanted) -> list[tuple[np.ndarray, str]]:
    """What each wanted neighbour source proposes: the allowed items with the best
    positive scores, QUOTAS of each (item_to_item also from the recent items)."""
    out = []
    for name in NEIGHBOUR_SOURCES:
        if name in wanted:
            for key in (name, f"{name}_recent"):
                if key in QUOTAS:
                    out.append((top_items(scores[key], QUOTAS[key], allowed), name))
    return out


class TrendOrders:
    """Items by ratings in each TRENDING_WINDOWS window and over all time, best first (the
    trending and popular sources), from a trend table (item -> trend row, as of one
    moment); an item without a rating in a window is not in its order. Indices point into
    `item_ids` (the table's items unless given); orders keep their `depth` best."""

    def __init__(self, table: dict[str, list], item_ids: list[str] | None = None,
                 depth: int | None = None):
        self.table = table
        self.item_ids = list(table) if item_ids is None else item_ids
        self.trend = trend = trend_rows(table, self.item_ids, missing=0)
        self._row = {item: i for i, item in enumerate(self.item_ids) if item in table}
        self.orders = {}
        for name, column in [*((w, trends.WINDOWS.index(w)) for w in TRENDING_WINDOWS),
                             ("all", len(trends.WINDOWS))]:
            order = np.argsort(-trend[:, column], kind="stable")
            self.orders[name] = order[trend[order, column] > 0][:depth]

    def rows(self, item_ids: list[str], missing: int) -> np.ndarray:
        """trend_rows(table, item_ids, missing), from the rows already built: one gather
        instead of a row copied per item (a request's 300 candidates: 0.1 ms less)."""
        if not self._row:
            return trend_rows({}, item_ids, missing)
        at = np.fromiter(map(self._row.get, item_ids, itertools.repeat(-1)), np.int64,
                         len(item_ids))
        rows = self.trend[at]
        absent = at < 0
        rows[absent] = 0.0
        rows[absent, -1] = missing
        return rows

    def positions(self, items) -> np.ndarray:
        """The indices (into item_ids) of those of `items` that have a trend row."""
        found = (self._row.get(item) for item in items)
        return np.fromiter((i for i in found if i is not None), np.int64)

    def top(self, name: str, n: int, allowed: np.ndarray) -> np.ndarray:
        """The first `n` indices (into item_ids) of an order that `allowed` allows."""
        order = self.orders[name]
        return order[allowed[order]][:n]

    def proposals(self, wanted, allowed: np.ndarray) -> list[tuple[np.ndarray, str]]:
        """What the wanted trending (each window) and popular sources propose, QUOTAS of
        each, among the indices `allowed` (a mask over item_ids) allows."""
        out = []
        if "trending" in wanted:
            out += [(self.top(w, QUOTAS["trending"], allowed), "trending")
                    for w in TRENDING_WINDOWS]
        if "popular" in wanted:
            out.append((self.top("all", QUOTAS["popular"], allowed), "popular"))
        return out


def top_items(scores: np.ndarray, n: int, allowed: np.ndarray) -> np.ndarray:
    """Indices of the `n` best positive scores among the allowed, best first."""
    masked = np.where(allowed, scores, 0.0)
    n = min(n, len(masked))
    top = np.argpartition(-masked, n - 1)[:n] if n else np.array([], np.int64)
    top = top[masked[top] > 0]
    return top[np.argsort(-masked[top], kind="stable")]


def neighbour_scores(index: np.ndarray, weight: np.ndarray, history: np.ndarray,
                     num_items: int) -> np.ndarray:
    """Per catalog item: the sum of its weights as a neighbour of the history's items."""
    if len(history) == 0:
        return np.zeros(num_items)
    return np.bincount(index[history].ravel(), weights=weight[history].ravel(),
                       minlength=num_items)


def genre_affinity(genres: np.ndarray, history: np.ndarray,
                   candidates: np.ndarray) -> np.ndarray:
    """Share of the user's history in each candidate's genres (mean over its genres)."""
    if len(history) == 0:
        return np.zeros(len(candidates))
    profile = genres[history].mean(axis=0)
    rows = genres[candidates]
    return rows @ profile / np.maximum(rows.sum(axis=1), 1)


def top_neighbours(similarity: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's `size` largest entries (the diagonal excluded): indices and weights."""
    similarity = similarity.copy()
    np.fill_diagonal(similarity, -np.inf)
    size = min(size, similarity.shape[1] - 1)
    index = np.argpartition(-similarity, size, axis=1)[:, :size]
    weight = np.take_along_axis(similarity, index, axis=1)
    weight[~np.isfinite(weight)] = 0.0
    return index.astype(np.int32), weight.astype(np.float32)


@dataclass
class Blend:
    """score = z . weight + relu(z . hidden_weight + hidden_bias) . output_weight, with z
    the standardised features."""
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    hidden_weight: np.ndarray | None = None
    hidden_bias: np.ndarray | None = None
    output_weight: np.ndarray | None = None

    def score(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean) / self.scale
        scores = z @ self.weight
        if self.hidden_weight is not None:
            scores = scores + np.maximum(z @ self.hidden_weight + self.hidden_bias, 0) \
                @ self.output_weight
        return scores

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"blend_mean": self.mean, "blend_scale": self.scale, "blend_weight": self.weight}
        if self.hidden_weight is not None:
            out.update(blend_hidden_weight=self.hidden_weight,
                       blend_hidden_bias=self.hidden_bias,
                       blend_output_weight=self.output_weight)
        return out

    @classmethod
    def of(cls, arrays: dict) -> "Blend":
        return cls(arrays["blend_mean"], arrays["blend_scale"], arrays["blend_weight"],
                   arrays.get("blend_hidden_weight"), arrays.get("blend_hidden_bias"),
                   arrays.get("blend_output_weight"))


class CandidateSources:
    """One retrieval version's sources and blend (see the module docstring)."""

    def __init__(self, arrays: dict[str, np.ndarray], info: dict | None = None):
        required = ("item_ids", "item_to_item_index", "item_to_item_weight", "ease_index",
                    "ease_weight", "genres", "blend_mean", "blend_scale", "blend_weight")
        missing = [k for k in required if k not in arrays]
        if missing:
            raise SourcesError(f"candidate sources artifact lacks {missing}")
        self.item_ids = [str(i) for i in arrays["item_ids"]]
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.neighbours = {name: (arrays[f"{name}_index"], arrays[f"{name}_weight"])
                           for name in ("item_to_item", "ease")}
        self.genres = arrays["genres"].astype(np.float32)
        self.blend = Blend.of(arrays)
        for name, (index, weight) in self.neighbours.items():
            if index.shape != weight.shape or index.shape[0] != len(self.item_ids):
                raise SourcesError(f"{name} neighbours: shape {index.shape}/{weight.shape} "
                                   f"for {len(self.item_ids)} items")
        if self.blend.weight.shape != (len(FEATURES),):
            raise SourcesError(f"blend has {self.blend.weight.shape} weights, "
                               f"expected {len(FEATURES)} ({', '.join(FEATURES)})")
        hidden = self.blend.hidden_weight
        if hidden is not None and (
                hidden.ndim != 2 or hidden.shape[0] != len(FEATURES)
                or self.blend.hidden_bias.shape != hidden.shape[1:]
                or self.blend.output_weight.shape != hidden.shape[1:]):
            raise SourcesError(f"blend's hidden layer: weights {hidden.shape}, bias "
                               f"{self.blend.hidden_bias.shape}, output "
                               f"{self.blend.output_weight.shape} do not fit")
        self.info = info or {}

    @classmethod
    def load(cls, path: str | Path) -> "CandidateSources":
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        info_path = Path(path).with_suffix(".json")
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        return cls(arrays, info)

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, **self.arrays())
        Path(path).with_suffix(".json").write_text(json.dumps(self.info, indent=2) + "\n")

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"item_ids": np.array(self.item_ids), "genres": self.genres.astype(np.uint8),
               **self.blend.arrays()}
        for name, (index, weight) in self.neighbours.items():
            out[f"{name}_index"], out[f"{name}_weight"] = index, weight
        return out

    def indices(self, items) -> np.ndarray:
        """The indices of the items these sources know (the others are left out)."""
        return np.array(sorted({self.index[i] for i in items if i in self.index}),
                        dtype=np.int64)

    def user_scores(self, history: np.ndarray, recent: np.ndarray) -> dict[str, np.ndarray]:
        return user_scores(self.neighbours, history, recent, len(self.item_ids))
