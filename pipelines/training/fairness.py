"""Fairness of the models across user groups (pandas, NumPy and fairlearn; no TensorFlow).

Per group of users (each attribute separately: gender; age group from the feature
spec's age boundaries), with fairlearn's MetricFrame:
  quality   retrieval: Recall@10 per eval user (seen items removed, evaluation.py's
            definition); ranking: RMSE over the group's eval ratings
  exposure  of the retrieval model's top 10 per user:
            popularity_percentile  mean popularity percentile of the recommended items
                                   (1 = the most rated item in train, 0 = never rated)
            long_tail_share        share of recommended items outside the head (the
                                   `head_fraction` most rated items of the catalog)
            genre_gap              total variation distance between the genre mix of
                                   the group's recommendations and of the group's
                                   training ratings (0 = same mix, 1 = disjoint)
Bounds (`BOUNDS`, set in the pipeline config) say how far groups may drift apart; groups
smaller than `min_group_size` are reported but not gated, their metrics being noise.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from libs import feature_spec
from pipelines.training import evaluation

ATTRIBUTES = ("gender", "age_group")
REASON_PREFIX = "fairness: "  # marks the gate's own reasons among its upstream gates'
SIZE = "size"  # the column of group sizes: users (retrieval) or ratings (ranking)


@dataclass(frozen=True)
class Bound:
    field: str  # the config field that sets the limit, named in every reason
    model: str  # retrieval | ranking
    metric: str
    kind: str  # max_difference (largest - smallest) | min_ratio (smallest / largest)
    #            | max_value (every group)


BOUNDS = (
    Bound("fairness_max_recall_difference", "retrieval", "recall_at_10", "max_difference"),
    Bound("fairness_min_recall_ratio", "retrieval", "recall_at_10", "min_ratio"),
    Bound("fairness_max_popularity_difference", "retrieval", "popularity_percentile",
          "max_difference"),
    Bound("fairness_max_long_tail_difference", "retrieval", "long_tail_share",
          "max_difference"),
    Bound("fairness_max_genre_gap", "retrieval", "genre_gap", "max_value"),
    Bound("fairness_max_rmse_difference", "ranking", "rmse", "max_difference"),
)


def user_groups(users: Iterable, genders: Iterable, ages: Iterable) -> pd.DataFrame:
    """One row per user (the first seen), indexed by user id, a column per attribute."""
    rows = pd.DataFrame({"user_id": list(users),
                         "gender": [g.decode() if isinstance(g, bytes) else g
                                    for g in genders],
                         "age_group": [feature_spec.age_group(int(a)) for a in ages]})
    return rows.drop_duplicates("user_id").set_index("user_id")


def popularity_percentiles(train_items: Iterable, catalog: Iterable) -> dict:
    counts = collections.Counter(train_items)
    ranks = pd.Series({item: counts.get(item, 0) for item in catalog}).rank(pct=True)
    # items nobody rated sit at 0 rather than sharing the lowest rank
    return {item: (float(p) if counts.get(item) else 0.0) for item, p in ranks.items()}


def head_items(train_items: Iterable, catalog: Iterable, head_fraction: float) -> set:
    catalog = list(catalog)
    size = int(np.ceil(head_fraction * len(catalog)))
    return set(evaluation.most_popular(train_items, size))


def genre_counts(items: Iterable, item_genres: dict) -> np.ndarray:
    """Counts of each of the spec's genres over `items` (an item counts once per genre)."""
    index = {g: i for i, g in enumerate(feature_spec.GENRES)}
    counts = np.zeros(len(feature_spec.GENRES))
    for item in items:
        for genre in item_genres.get(item, "unknown").split(feature_spec.GENRE_SEPARATOR):
            counts[index.get(genre, 0)] += 1
    return counts


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    p, q = p / max(p.sum(), 1e-12), q / max(q.sum(), 1e-12)
    return 0.5 * float(np.abs(p - q).sum())


def _ordered(table: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """Groups in a readable order: age groups youngest first, others by name."""
    table.index = table.index.astype(str).rename(attribute)
    ages = [feature_spec.age_group(a) for a in (0, *feature_spec.AGE_BOUNDARIES)]

    def key(group: str) -> tuple:
        return (ages.index(group) if group in ages else len(ages), group)

    return table.loc[sorted(table.index, key=key)]


def _mean_of(y_true, y_pred, values) -> float:
    return float(np.mean(values))


def _count(y_true, y_pred) -> int:
    return len(y_true)


def _rmse(y_true, y_pred) -> float:
    return float(np.sqrt(np.mean((np.asarray(y_true) - np.asarray(y_pred)) ** 2)))


def retrieval_tables(recommended: dict, relevant: dict, groups: pd.DataFrame,
                     popularity: dict, head: set, item_genres: dict,
                     train_users: list, train_items: list, cutoff: int = 10,
                     attributes: tuple = ATTRIBUTES) -> dict[str, pd.DataFrame]:
    """Per attribute, a table of its groups: size (users), Recall@cutoff, exposure."""
    users = list(relevant)
    recall = [evaluation.recall_ndcg_at_k({u: recommended.get(u, [])}, {u: relevant[u]},
                                          cutoff)[0] for u in users]
    per_user = {
        f"recall_at_{cutoff}": recall,
        "popularity_percentile": [np.mean([popularity.get(i, 0.0) for i in recommended[u]])
                                  if recommended.get(u) else 0.0 for u in users],
        "long_tail_share": [np.mean([i not in head for i in recommended[u]])
                            if recommended.get(u) else 0.0 for u in users]}
    rows = groups.reindex(users)
    train_groups = groups.reindex(train_users)
    tables = {}
    for attribute in attributes:
        frame = MetricFrame(
            metrics={SIZE: _count, **{name: _mean_of for name in per_user}},
            y_true=np.zeros(len(users)), y_pred=np.zeros(len(users)),
            sensitive_features=rows[attribute].fillna("unknown").to_numpy(),
            sample_params={name: {"values": np.asarray(v, float)}
                           for name, v in per_user.items()})
        table = _ordered(frame.by_group, attribute)
        gaps, mixes = {}, {}
        for group in table.index:
            members = rows.index[rows[attribute].astype(str) == group]
            shown = genre_counts((i for u in members for i in recommended.get(u, [])),
                                 item_genres)
            rated = genre_counts((i for i, g in zip(train_items,
                                                    train_groups[attribute].astype(str))
                                  if g == group), item_genres)
            gaps[group] = total_variation(shown, rated) if rated.sum() else np.nan
            mixes[group] = (shown / max(shown.sum(), 1), rated / max(rated.sum(), 1))
        table["genre_gap"] = pd.Series(gaps)
        table.attrs["genre_mix"] = mixes
        tables[attribute] = table
    return tables


def ranking_tables(ratings: np.ndarray, predictions: np.ndarray, baseline: np.ndarray,
                   users: list, groups: pd.DataFrame,
                   attributes: tuple = ATTRIBUTES) -> dict[str, pd.DataFrame]:
    """Per attribute, a table of its groups: size (ratings), the model's RMSE and the
    item-mean baseline's."""
    rows = groups.reindex(users)
    tables = {}
    for attribute in attributes:
        frame = MetricFrame(
            metrics={SIZE: _count, "rmse": _rmse,
                     "baseline_rmse": lambda y_true, y_pred, baseline: _rmse(y_true,
                                                                              baseline)},
            y_true=np.asarray(ratings, float), y_pred=np.asarray(predictions, float),
            sensitive_features=rows[attribute].fillna("unknown").to_numpy(),
            sample_params={"baseline_rmse": {"baseline": np.asarray(baseline, float)}})
        tables[attribute] = _ordered(frame.by_group, attribute)
    return tables


def check_bounds(tables: dict[str, pd.DataFrame], limits: dict[str, float],
                 min_group_size: int) -> list[str]:
    """Why the tables break the bounds `limits` ({config field: limit}) set; [] if none.
    Bounds missing from `limits` (the other model's) are not checked."""
    reasons = []
    for bound in BOUNDS:
        limit = limits.get(bound.field)
        if limit is None:
            continue
        for attribute, table in tables.items():
            gated = table.loc[table[SIZE] >= min_group_size, bound.metric].dropna()
            if len(gated) == 0 or (bound.kind != "max_value" and len(gated) < 2):
                continue
            low, high = gated.idxmin(), gated.idxmax()
            values = f"({low} {gated[low]:.4f}, {high} {gated[high]:.4f})"
            if bound.kind == "max_difference" and gated[high] - gated[low] > limit:
                reasons.append(f"{attribute}: {bound.metric} differs by "
                               f"{gated[high] - gated[low]:.4f} between groups {values}, "
                               f"above {bound.field} {limit}")
            elif bound.kind == "min_ratio" and gated[low] < limit * gated[high]:
                ratio = gated[low] / gated[high] if gated[high] else 0.0
                reasons.append(f"{attribute}: {bound.metric} ratio {ratio:.4f} between "
                               f"groups {values} is below {bound.field} {limit}")
            elif bound.kind == "max_value" and gated[high] > limit:
                reasons.append(f"{attribute}: {bound.metric} of group {high} is "
                               f"{gated[high]:.4f}, above {bound.field} {limit}")
    return reasons


def as_json(tables: dict[str, pd.DataFrame]) -> dict:
    """The tables as {attribute: {group: {metric: value}}} (NaN -> None)."""
    return {attribute: {group: {k: (None if pd.isna(v) else float(v))
                                for k, v in row.items()}
                        for group, row in table.iterrows()}
            for attribute, table in tables.items()}
