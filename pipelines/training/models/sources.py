"""Builds a retrieval version's candidate sources and trains their blend (numpy only).

Neighbours (item-to-item co-occurrence, EASE) come from every training rating. The blend
is trained as production rankers are, on lists of what the sources proposed: at
`PSEUDO_CUTS` moments before the data's end, the sources are built from the ratings
before that moment, each user active before and after it gets the union of their
candidates, and the items they rated after it (up to the data's end) are the positives of
a softmax over their list. The gate's validation is time-ordered, as the replay is: its
lists are those of the last `VALIDATION_DAYS`, and the blend it judges learns only from
lists whose labels end before them (pseudo-cuts before `VALIDATION_DAYS`); the served
blend then learns from all the pseudo-cuts. Nothing here sees data after the training
set's end: the replay's test period stays unseen.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from libs import candidate_sources as cs, feature_spec, trends
from pipelines.training import evaluation

logger = logging.getLogger(__name__)

NEIGHBOURS = 100  # per item, for both neighbour sources
EASE_LAMBDA = 250.0
MAX_ITEMS = 20_000  # dense item x item matrices above this would not fit; sources are off
PSEUDO_CUTS = tuple(7 * k for k in range(1, 13))  # days before the labels end
# The gate's lists: what users rated in the last VALIDATION_DAYS. Holding out pseudo-cuts
# while training on the others leaks: every pseudo-cut's labels run to the data's end, so
# they cover the held-out period (README, Candidate sources: what that made look good).
VALIDATION_DAYS = 14
# The blend: a linear part and HIDDEN ReLU units; on the pseudo-cut validation lists of
# the replay's three training sets, mean NDCG@10 0.246-0.278 linear, 0.266-0.293 with 16
# units (README, Candidate sources)
HIDDEN, STEPS, LEARNING_RATE, L2 = 16, 600, 0.02, 1e-2
# The held-out lists and the blend trained without them, next to the Trainer's
# Format-Serving directory (the retrieval evaluator's gate reads it)
VALIDATION_FILE = "candidate_sources_validation.npz"


def _interactions(ratings: pd.DataFrame, index: dict[str, int]) -> tuple[np.ndarray, list]:
    users = sorted(ratings.user_id.unique())
    row = {u: i for i, u in enumerate(users)}
    matrix = np.zeros((len(users), len(index)), np.float32)
    matrix[ratings.user_id.map(row).to_numpy(), ratings.item_id.map(index).to_numpy()] = 1.0
    return matrix, users


def neighbours(matrix: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Item-to-item cosine and EASE weights, each item's NEIGHBOURS largest."""
    gram = matrix.T.astype(np.float64) @ matrix
    counts = np.diag(gram).copy()
    norm = np.sqrt(np.maximum(counts, 1.0))
    cosine = gram / norm[:, None] / norm[None, :]
    regularised = gram + EASE_LAMBDA * np.eye(len(gram))
    inverse = np.linalg.inv(regularised)
    ease = -inverse / np.diag(inverse)[None, :]
    return {"item_to_item": cs.top_neighbours(cosine, NEIGHBOURS),
            "ease": cs.top_neighbours(ease, NEIGHBOURS)}


def latest_items(ratings: pd.DataFrame) -> pd.Series:
    """Each user's feature_spec.RECENT_ITEMS latest items (the feature store's
    user_activity.recent_items)."""
    return (ratings.sort_values(["timestamp", "item_id"], kind="stable")
            .groupby("user_id").tail(feature_spec.RECENT_ITEMS).groupby("user_id").item_id.agg(list))


@dataclass
class CutLists:
    """Every user's candidates at one cut: features, when the user rated each one after
    the cut (inf: not yet) and list ids; `labelled` picks the positives of a label window.
    `rated_lists` and `rated_times`: every item each list's user rated after the cut (not
    only candidates), what the online quality check counts as relevant."""
    features: np.ndarray
    rated_at: np.ndarray
    lists: np.ndarray
    rated_lists: np.ndarray
    rated_times: np.ndarray

    def labelled(self, until: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, labels (rated before `until`) and list ids of the lists with a
        positive."""
        labels = self.rated_at < until
        keep = np.isin(self.lists, np.unique(self.lists[labels]))
        return self.features[keep], labels[keep], self.lists[keep]

    def rated_counts(self, until: int) -> np.ndarray:
        """(list id, items rated after the cut and before `until`) of every list whose
        user rated at least one item, candidate or not, in that window."""
        ids, counts = np.unique(self.rated_lists[self.rated_times < until],
                                return_counts=True)
        return np.stack([ids, counts]).astype(np.int64)


def candidate_lists(ratings: pd.DataFrame, items: list[str], genres: np.ndarray,
                    cut: int) -> CutLists:
    """The lists of every user who rated before `cut` and after it."""
    index = {item: i for i, item in enumerate(items)}
    before, after = ratings[ratings.timestamp < cut], ratings[ratings.timestamp >= cut]
    features, rated_at, lists = [np.zeros((0, len(cs.FEATURES)))], [np.zeros(0)], [
        np.zeros(0, np.int64)]
    rated_lists, rated_times = [np.zeros(0, np.int64)], [np.zeros(0)]
    if before.empty or after.empty:
        return CutLists(features[0], rated_at[0], lists[0], rated_lists[0], rated_times[0])
    matrix, users = _interactions(before, index)
    sources = neighbours(matrix)
    table = trends.trend_table(zip(before.item_id, before.timestamp), cut)
    trend = cs.trend_rows(table, items, missing=cut)
    orders = cs.TrendOrders(table, items)
    future = after.groupby(["user_id", "item_id"]).timestamp.min()
    future = {user: group.droplevel(0).to_dict() for user, group in future.groupby(level=0)}
    latest = latest_items(before)
    for row, user in enumerate(users):
        if user not in future:
            continue
        history = np.flatnonzero(matrix[row])
        recent = np.array([index[i] for i in latest[user]], np.int64)
        allowed = matrix[row] == 0
        scores = cs.user_scores(sources, history, recent, len(items))
        proposed = [top for top, _ in (*cs.neighbour_proposals(scores, allowed, cs.SOURCES),
                                       *orders.proposals(cs.SOURCES, allowed))]
        candidates = np.unique(np.concatenate(proposed).astype(np.int64))
        features.append(cs.feature_matrix(trend[candidates], cut, scores, genres, history,
                                          candidates))
        rated_at.append(np.array([future[user].get(items[c], np.inf) for c in candidates]))
        lists.append(np.full(len(candidates), row))
        new = [t for item, t in future[user].items() if item not in index
               or allowed[index[item]]]  # a re-rating is nothing new to recommend
        rated_times.append(np.array(new, float))
        rated_lists.append(np.full(len(new), row))
    return CutLists(*(np.concatenate(a) for a in (features, rated_at, lists, rated_lists,
                                                   rated_times)))


def _segments(lists: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[True, lists[1:] != lists[:-1]])


def train_blend(features: np.ndarray, labels: np.ndarray, lists: np.ndarray,
                hidden: int = HIDDEN, seed: int = 0) -> cs.Blend:
    """Softmax over each list, positives sharing the target; a linear part and `hidden`
    ReLU units (Adam, full batch)."""
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    z = (features - mean) / scale
    width = z.shape[1]
    # the hidden bias as one more input column: one product gives the hidden units'
    # inputs, one their gradients (every pass over the rows counts: memory-bound)
    z1 = np.hstack([z, np.ones((len(z), 1))])
    z1t = np.ascontiguousarray(z1.T)
    starts = _segments(lists)
    segment = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(lists)]))
    target = labels / np.add.reduceat(labels.astype(float), starts)[segment]
    rng = np.random.default_rng(seed)
    params = [np.zeros(width), rng.normal(scale=0.3, size=(width, hidden)),
              np.zeros(hidden), rng.normal(scale=0.3, size=hidden)]
    moments = [np.zeros_like(p) for p in params]
    velocities = [np.zeros_like(p) for p in params]
    masked = np.empty((len(z), hidden))
    for step in range(1, STEPS + 1):
        weight, hidden_weight, hidden_bias, output_weight = params
        activation = z1 @ np.vstack([hidden_weight, hidden_bias])
        np.maximum(activation, 0, out=activation)
        delta = z @ weight  # the scores, then in place their softmax's gradient
        delta += activation @ output_weight
        delta -= np.maximum.reduceat(delta, starts)[segment]
        np.exp(delta, out=delta)
        delta /= np.add.reduceat(delta, starts)[segment]
        delta -= target
        delta /= len(starts)
        np.multiply(activation > 0, delta[:, None], out=masked)
        hidden_gradient = (z1t @ masked) * output_weight
        gradients = [z1t[:width] @ delta + L2 * weight,
                     hidden_gradient[:width] + L2 * hidden_weight, hidden_gradient[width],
                     activation.T @ delta + L2 * output_weight]
        for p, g, m, v in zip(params, gradients, moments, velocities):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g ** 2
            p -= LEARNING_RATE * (m / (1 - 0.9 ** step)) / (
                np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    weight, hidden_weight, hidden_bias, output_weight = params
    if not hidden:
        return cs.Blend(mean, scale, weight)
    return cs.Blend(mean, scale, weight, hidden_weight, hidden_bias, output_weight)


def list_metrics(scores: np.ndarray, labels: np.ndarray, lists: np.ndarray,
                 rated: np.ndarray | None = None) -> dict:
    """Means over lists of NDCG@10 and Recall@10 (of the list's positives) of each list
    ordered by `scores`, as the pipeline and the replay score a user
    (evaluation.user_recall_ndcg). With `rated` (CutLists.rated_counts): Recall@10 and
    hit rate@10 over every list whose user rated anything in the window, each divided by
    all they rated, candidates or not: what the online quality check measures on what
    was served (pipelines/monitoring/quality.py), so the two can be compared."""
    starts = _segments(lists)
    ends = np.r_[starts[1:], len(lists)]
    ndcg, recall, hits = [], [], {}
    for start, end in zip(starts, ends):
        order = np.argsort(-scores[start:end], kind="stable")[:10].tolist()
        positives = set(np.flatnonzero(labels[start:end]).tolist())
        user_recall, user_ndcg = evaluation.user_recall_ndcg(order, positives, 10)
        recall.append(user_recall)
        ndcg.append(user_ndcg)
        hits[int(lists[start])] = len(positives.intersection(order))
    out = {"ndcg_at_10": float(np.mean(ndcg)) if ndcg else 0.0,
           "recall_at_10": float(np.mean(recall)) if recall else 0.0}
    if rated is not None and rated.shape[1]:
        found = np.array([hits.get(int(i), 0) for i in rated[0]], float)
        out["recall_at_10_all_rated"] = float(np.mean(found / rated[1]))
        out["hit_rate_at_10_all_rated"] = float(np.mean(found > 0))
    return out


def orders(features: np.ndarray) -> dict[str, np.ndarray]:
    """The non-personalised orders of validation lists: trending (TRENDING_DAYS), most
    popular (all time); ties broken by the other."""
    trending = features[:, cs.FEATURES.index(f"log_count_{trends.TRENDING_DAYS}d")]
    popular = features[:, cs.FEATURES.index("log_count_all")]
    return {"trending": trending + 1e-6 * popular, "most popular": popular + 1e-6 * trending}


def validation_metrics(blend: cs.Blend, features: np.ndarray, labels: np.ndarray,
                       lists: np.ndarray, baseline: cs.Blend | None = None,
                       rated: np.ndarray | None = None) -> dict:
    """The blend's order of the validation lists, and the others', as a gate reads them."""
    scored = {"blend": blend.score(features), **orders(features)}
    if baseline is not None:
        scored["last blessed blend"] = baseline.score(features)
    return {name: list_metrics(s, labels, lists, rated) for name, s in scored.items()}


def _stack(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """One set of lists from several cuts' (features, labels, list ids)."""
    features = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    lists = np.concatenate([p[2] + k * 10_000_000 for k, p in enumerate(parts)])
    return features, labels, lists


def build(ratings: pd.DataFrame, catalog: pd.DataFrame, progress=logger.info, seed: int = 0
          ) -> cs.CandidateSources | None:
    """The sources of a model trained on `ratings` (user_id, item_id, timestamp) over
    `catalog` (item_id, genres), and the validation lists (features, labels, list ids)
    with the blend trained before them (None when there are none); None for both when
    the catalog is too large for sources or the history too short."""
    start = time.monotonic()
    items = [str(i) for i in catalog.item_id]
    if len(items) > MAX_ITEMS:
        progress(f"candidate sources: off ({len(items):,} items > {MAX_ITEMS:,})")
        return None, None
    ratings = ratings[ratings.item_id.isin(set(items))]
    genres = np.array([[g in str(value).split(feature_spec.GENRE_SEPARATOR)
                        for g in feature_spec.GENRES] for value in catalog.genres], np.float32)
    end = int(ratings.timestamp.max()) + 1
    validation_end = end - VALIDATION_DAYS * trends.DAY
    # a cut's features only depend on what came before it: each cut is built once and
    # labelled for the served blend (up to `end`) and the gate's (up to validation_end)
    days = sorted({*PSEUDO_CUTS, VALIDATION_DAYS, *(VALIDATION_DAYS + d for d in PSEUDO_CUTS)})
    at = {d: candidate_lists(ratings, items, genres, end - d * trends.DAY) for d in days}

    def labelled(cuts, until):
        found = [(d, at[d].labelled(until)) for d in cuts]
        return [(d, lists) for d, lists in found if len(lists[0])]

    served = labelled(PSEUDO_CUTS, end)
    if not served:  # too short a history to learn from: the two-tower serves alone
        progress("candidate sources: off (no user rated both before and after any "
                 f"pseudo-cut {PSEUDO_CUTS[0]}-{PSEUDO_CUTS[-1]} days before the data's end)")
        return None, None
    validation = labelled([VALIDATION_DAYS], end)
    before_validation = labelled([VALIDATION_DAYS + d for d in PSEUDO_CUTS], validation_end)
    report = {"pseudo_cuts_days": [d for d, _ in served], "validation_days": VALIDATION_DAYS,
              "lists": int(sum(len(np.unique(p[2])) for _, p in served))}
    held_out = None
    if validation and before_validation:
        # the gate judges this blend, trained on what was known before the validation days
        features, labels, lists = validation[0][1]
        rated = at[VALIDATION_DAYS].rated_counts(end)
        blend = train_blend(*_stack([p for _, p in before_validation]), seed=seed)
        held_out = {"features": features, "labels": labels, "lists": lists,
                    "rated": rated, **blend.arrays()}
        found = validation_metrics(blend, features, labels, lists, rated=rated)
        report["validation_lists"] = int(len(np.unique(lists)))
        report["validation_ndcg_at_10"] = {name: round(m["ndcg_at_10"], 4)
                                           for name, m in found.items()}
    blend = train_blend(*_stack([p for _, p in served]), seed=seed)
    report["linear_weights"] = dict(zip(cs.FEATURES, np.round(blend.weight, 4).tolist()))
    matrix, _ = _interactions(ratings, {item: i for i, item in enumerate(items)})
    found = neighbours(matrix)
    arrays = {"item_ids": np.array(items), "genres": genres, **blend.arrays()}
    for name, (index, weight) in found.items():
        arrays[f"{name}_index"], arrays[f"{name}_weight"] = index, weight
    report["seconds"] = round(time.monotonic() - start, 1)
    progress(f"candidate sources: {report['lists']:,} lists over {len(served)} pseudo-cuts; "
             f"validation ({VALIDATION_DAYS} days, {report.get('validation_lists', 0)} lists) "
             f"NDCG@10 {report.get('validation_ndcg_at_10')} ({report['seconds']}s)")
    return cs.CandidateSources(arrays, report), held_out
