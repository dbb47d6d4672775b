"""Fairness of the models across user groups (pandas, NumPy and fairlearn; no TensorFlow).

Per group of users (each attribute separately: gender; age group from the feature
spec's age boundaries), with fairlearn's MetricFrame:
  quality   retrieval: Recall@10 per eval user (seen items removed, evaluation.py's
            definition); ranking: RMSE over the group's eval ratings, and its excess
            over the item-mean baseline's on the same ratings (how much worse than
            that baseline the model serves the group; some groups' ratings are harder
            to predict for any model)
  exposure  of the retrieval model's top 10 per user:
            popularity_percentile  mean popularity percentile of the recommended items
                                   (1 = the most rated item in train, 0 = never rated)
            long_tail_share        share of recommended items outside the head (the
                                   `head_fraction` most rated items of the catalog)
            genre_gap              total variation distance between the genre mix of
                                   the group's recommendations and of the group's
                                   training ratings (0 = same mix, 1 = disjoint)
Bounds (`BOUNDS`, set in the pipeline config) say how far groups may drift apart; groups
of fewer than `min_group_size` users are reported but not gated. A bound judges evidence,
not noise: each group's metric comes with a bootstrap over its users (`SAMPLES` draws;
for RMSE a user's ratings stay together), and a gap blocks a model only when it breaks
the bound at the lower end of its `confidence` interval (the difference of the two
extreme groups' draws, or a group's excess over the baseline; for a ratio, the upper
end). The genre gap, a statistic of a group's pooled counts, is judged on its value.
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
SIZE = "size"  # the column of group sizes: users
SAMPLES = 1000  # bootstrap draws per group and metric


@dataclass(frozen=True)
class Bound:
    field: str  # the config field that sets the limit, named in every reason
    model: str  # retrieval | ranking
    metric: str
    kind: str  # max_difference (largest - smallest) | min_ratio (smallest / largest)
    #            | max_value (every group, on its value) | max_excess (every group, on its
    #            interval)


BOUNDS = (
    Bound("fairness_max_recall_difference", "retrieval", "recall_at_10", "max_difference"),
    Bound("fairness_min_recall_ratio", "retrieval", "recall_at_10", "min_ratio"),
    Bound("fairness_max_popularity_difference", "retrieval", "popularity_percentile",
          "max_difference"),
    Bound("fairness_max_long_tail_difference", "retrieval", "long_tail_share",
          "max_difference"),
    Bound("fairness_max_genre_gap", "retrieval", "genre_gap", "max_value"),
    Bound("fairness_max_rmse_difference", "ranking", "rmse", "max_difference"),
    Bound("fairness_max_rmse_excess_over_item_mean", "ranking", "rmse_excess", "max_excess"),
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


def _bootstrap(per_user: dict[str, np.ndarray], labels: np.ndarray,
               statistic=lambda draws: draws.mean(axis=1)) -> dict[str, dict]:
    """{metric: {group: SAMPLES bootstrap values of the group's statistic}}, resampling the
    group's users; `per_user` arrays may be 2-D (a row per user), `statistic` gets the
    resampled rows as [draw, user, ...]."""
    out: dict[str, dict] = {name: {} for name in per_user}
    for group in sorted(set(labels)):
        members = np.flatnonzero(labels == group)
        rng = np.random.default_rng(len(members))  # the same draws on every run
        draws = members[rng.integers(0, len(members), (SAMPLES, len(members)))]
        for name, values in per_user.items():
            out[name][str(group)] = statistic(values[draws])
    return out


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
        table.attrs["samples"] = _bootstrap(
            {name: np.asarray(v, float) for name, v in per_user.items()},
            rows[attribute].fillna("unknown").astype(str).to_numpy())
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
    """Per attribute, a table of its groups: size (users), ratings, the model's RMSE, the
    item-mean baseline's and the excess of the first over the second."""
    rows = groups.reindex(users)
    ratings = np.asarray(ratings, float)
    errors = pd.DataFrame({"user_id": list(users), "count": 1.0,
                           "se": (ratings - np.asarray(predictions, float)) ** 2,
                           "baseline_se": (ratings - np.asarray(baseline, float)) ** 2})
    per_user = errors.groupby("user_id")[["se", "count", "baseline_se"]].sum()
    user_rows = groups.reindex(per_user.index)

    def rmse(draws, column=0):  # [draw, user, (se, count, baseline_se)]
        return np.sqrt(draws[..., column].sum(axis=1) / draws[..., 1].sum(axis=1))

    def excess(draws):
        return rmse(draws) - rmse(draws, 2)

    tables = {}
    for attribute in attributes:
        frame = MetricFrame(
            metrics={"ratings": _count, "rmse": _rmse,
                     "baseline_rmse": lambda y_true, y_pred, baseline: _rmse(y_true,
                                                                              baseline)},
            y_true=np.asarray(ratings, float), y_pred=np.asarray(predictions, float),
            sensitive_features=rows[attribute].fillna("unknown").to_numpy(),
            sample_params={"baseline_rmse": {"baseline": np.asarray(baseline, float)}})
        table = frame.by_group
        table["rmse_excess"] = table["rmse"] - table["baseline_rmse"]
        labels = user_rows[attribute].fillna("unknown").astype(str)
        table.insert(0, SIZE, labels.value_counts().reindex(
            table.index.astype(str)).fillna(0).astype(int).to_numpy())
        table = _ordered(table, attribute)
        # the same draws for both (the generator is seeded by the group's size)
        values = per_user.to_numpy(float)
        table.attrs["samples"] = {
            **_bootstrap({"rmse": values}, labels.to_numpy(), rmse),
            **_bootstrap({"rmse_excess": values}, labels.to_numpy(), excess)}
        tables[attribute] = table
    return tables


@dataclass
class Check:
    """One bound on one attribute: the estimate, its interval and whether it blocks."""
    field: str
    attribute: str
    metric: str
    estimate: float
    low: float | None  # the interval at `confidence`; None where no draws exist
    high: float | None
    groups: tuple[str, ...]
    limit: float
    blocks: bool
    reason: str = ""

    def __post_init__(self):  # plain Python values: the gate writes them as JSON
        self.estimate, self.limit, self.blocks = (float(self.estimate), float(self.limit),
                                                  bool(self.blocks))

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _interval(values: np.ndarray | None, confidence: float):
    if values is None:
        return None, None
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def _span(low: float | None, high: float | None, confidence: float) -> str:
    return "" if low is None else f", {confidence:.0%} interval {low:.4f} to {high:.4f}"


def evaluate_bounds(tables: dict[str, pd.DataFrame], limits: dict[str, float],
                    min_group_size: int, confidence: float = 0.95) -> list[Check]:
    """Every bound of `limits` ({config field: limit}) on every attribute. Bounds missing
    from `limits` (the other model's) are not checked."""
    checks = []
    for bound in BOUNDS:
        limit = limits.get(bound.field)
        if limit is None:
            continue
        for attribute, table in tables.items():
            gated = table.loc[table[SIZE] >= min_group_size, bound.metric].dropna()
            if len(gated) == 0 or (bound.kind in ("max_difference", "min_ratio")
                                   and len(gated) < 2):
                continue
            draws = table.attrs.get("samples", {}).get(bound.metric, {})
            low, high = gated.idxmin(), gated.idxmax()
            sizes = f"{int(table.loc[low, SIZE])} and {int(table.loc[high, SIZE])} users"
            values = f"({low} {gated[low]:.4f}, {high} {gated[high]:.4f}; {sizes})"
            if bound.kind == "max_difference":
                both = str(low) in draws and str(high) in draws
                gap = gated[high] - gated[low]
                lo, hi = _interval(draws[str(high)] - draws[str(low)] if both else None,
                                   confidence)
                blocks = gap > limit and (lo is None or lo > limit)
                check = Check(bound.field, attribute, bound.metric, gap, lo, hi,
                              (str(low), str(high)), limit, blocks)
                check.reason = (f"{attribute}: {bound.metric} differs by {gap:.4f} between "
                                f"groups {values}{_span(lo, hi, confidence)}, "
                                f"{_side(gap > limit, 'above')} {bound.field} {limit}")
            elif bound.kind == "min_ratio":
                both = str(low) in draws and str(high) in draws
                ratio = gated[low] / gated[high] if gated[high] else 0.0
                lo, hi = _interval(draws[str(low)] / np.maximum(draws[str(high)], 1e-12)
                                   if both else None, confidence)
                blocks = ratio < limit and (hi is None or hi < limit)
                check = Check(bound.field, attribute, bound.metric, ratio, lo, hi,
                              (str(low), str(high)), limit, blocks)
                check.reason = (f"{attribute}: {bound.metric} ratio {ratio:.4f} between "
                                f"groups {values}{_span(lo, hi, confidence)} is "
                                f"{_side(ratio < limit, 'below')} {bound.field} {limit}")
            elif bound.kind == "max_excess":
                # the group whose interval reaches furthest past the bound speaks for all
                spans = {g: _interval(draws.get(str(g)), confidence) for g in gated.index}
                worst = max(gated.index, key=lambda g: (
                    gated[g] if spans[g][0] is None else spans[g][0]))
                lo, hi = spans[worst]
                blocks = gated[worst] > limit and (lo is None or lo > limit)
                check = Check(bound.field, attribute, bound.metric, float(gated[worst]), lo,
                              hi, (str(worst),), limit, blocks)
                baseline = table.loc[worst, "baseline_rmse"]
                check.reason = (f"{attribute}: group {worst}'s RMSE "
                                f"{table.loc[worst, 'rmse']:.4f} is {abs(gated[worst]):.4f} "
                                f"{'above' if gated[worst] >= 0 else 'below'} "
                                f"the item-mean baseline's {baseline:.4f} on the same ratings "
                                f"({int(table.loc[worst, SIZE])} users"
                                f"{_span(lo, hi, confidence)}), "
                                f"{_side(gated[worst] > limit, 'above')} {bound.field} {limit}")
            else:
                check = Check(bound.field, attribute, bound.metric, float(gated[high]),
                              None, None, (str(high),), limit, gated[high] > limit)
                check.reason = (f"{attribute}: {bound.metric} of group {high} is "
                                f"{gated[high]:.4f}, {_side(gated[high] > limit, 'above')} "
                                f"{bound.field} {limit}")
            checks.append(check)
    return checks


def _side(past: bool, word: str) -> str:
    """A check's reason is written whether it passes or not: say which side it is on."""
    return word if past else "within"


def check_bounds(tables: dict[str, pd.DataFrame], limits: dict[str, float],
                 min_group_size: int, confidence: float = 0.95) -> list[str]:
    """Why the tables break the bounds; [] if none. A reason names the groups, the gap,
    its interval and what to do."""
    advice = ("; the gap is beyond noise: see the fairness report for the group's "
              "metrics, give the model more of that group's data or features that serve "
              "it, or change the bound if the gap is accepted")
    return [c.reason + advice for c in evaluate_bounds(tables, limits, min_group_size,
                                                       confidence) if c.blocks]


def as_json(tables: dict[str, pd.DataFrame]) -> dict:
    """The tables as {attribute: {group: {metric: value}}} (NaN -> None)."""
    return {attribute: {group: {k: (None if pd.isna(v) else float(v))
                                for k, v in row.items()}
                        for group, row in table.iterrows()}
            for attribute, table in tables.items()}
