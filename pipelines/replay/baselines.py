"""What a served answer must beat on the future, computed from the same pre-cut ratings.

  most popular     items by number of ratings before the cut
  trending N d     items by number of ratings in the N days before the cut
  EASE             closed-form item-to-item model (Steck, 2019) on who rated what
  EASE + trending  per user, min-max normalised EASE scores plus `weight` x normalised
                   trending counts; the window and weight are chosen on the validation
                   period before the cut (`choose_blend`), never on the period scored
Every method excludes what the user rated before the cut. Users unknown before the cut
(new users) get the non-personalised lists only. NumPy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.replay import scoring
from pipelines.training.baselines import ease_scores

DAY = 86_400


@dataclass
class History:
    """Ratings before a cut, indexed: users x items who-rated-what."""
    users: pd.Index
    items: pd.Index
    seen: np.ndarray  # float32 users x items, 1 = rated before the cut
    ratings: pd.DataFrame

    @classmethod
    def of(cls, ratings: pd.DataFrame) -> "History":
        users = pd.Index(sorted(ratings.user_id.unique()))
        items = pd.Index(sorted(ratings.item_id.unique()))
        seen = np.zeros((len(users), len(items)), dtype=np.float32)
        seen[users.get_indexer(ratings.user_id), items.get_indexer(ratings.item_id)] = 1.0
        return cls(users, items, seen, ratings)

    def counts(self, since: int | None = None) -> np.ndarray:
        """Ratings per item (in the catalog's order), only those at or after `since`."""
        rows = self.ratings if since is None else self.ratings[self.ratings.timestamp >= since]
        return (rows.item_id.value_counts().reindex(self.items, fill_value=0)
                .to_numpy(dtype=np.float64))


def _top(scores: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k best unseen items, best first; ties by catalog order."""
    scores = np.where(seen > 0, -np.inf, scores)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return best


def _normalise(scores: np.ndarray) -> np.ndarray:
    low = scores.min(axis=1, keepdims=True)
    spread = scores.max(axis=1, keepdims=True) - low
    return (scores - low) / np.where(spread > 0, spread, 1.0)


def non_personalised(history: History, cut: int, windows: tuple[int, ...]
                     ) -> dict[str, np.ndarray]:
    """Score vectors over the catalog: most popular and trending per window."""
    lists = {"most popular": history.counts()}
    for days in windows:
        # all-time counts break ties, so a short window still ranks every item
        lists[f"trending {days}d"] = history.counts(cut - days * DAY) + \
            lists["most popular"] / (1 + lists["most popular"].max())
    return lists


def ease(history: History, regularization: float) -> np.ndarray:
    return ease_scores(history.seen, regularization)


def blend(ease_matrix: np.ndarray, trending: np.ndarray, weight: float) -> np.ndarray:
    return _normalise(ease_matrix) + weight * _normalise(trending[None, :])


def recommend(history: History, scores: np.ndarray, users: list[str], k: int
              ) -> dict[str, list[str]]:
    """{user: top k unseen item ids}; `scores` is a catalog vector or users x items."""
    known = [u for u in users if u in history.users]
    rows = history.users.get_indexer(known)
    seen = history.seen[rows]
    matrix = scores[rows] if scores.ndim == 2 else np.broadcast_to(scores, seen.shape)
    best = _top(matrix, seen, k)
    out = {u: [history.items[i] for i in row if not seen[n, i]]
           for n, (u, row) in enumerate(zip(known, best))}
    if len(known) < len(users) and scores.ndim == 1:
        order = list(history.items[np.argsort(-scores, kind="stable")[:k]])
        out.update({u: order for u in users if u not in out})
    return out


@dataclass
class BlendChoice:
    days: int
    weight: float
    validation_recall: float
    validation_users: int


def choose_blend(ratings: pd.DataFrame, cut: int, validation_days: int,
                 windows: tuple[int, ...], weights: tuple[float, ...],
                 regularization: float, k: int) -> BlendChoice:
    """The trending window and weight of the blend with the best Recall@k on the last
    `validation_days` before the cut, fitted on what came before them."""
    start = cut - validation_days * DAY
    before = ratings[ratings.timestamp < start]
    after = ratings[(ratings.timestamp >= start) & (ratings.timestamp < cut)]
    history = History.of(before)
    truth = scoring.future_items(after, set(history.users))
    users = sorted(truth)
    if not users:
        return BlendChoice(windows[0], weights[0], float("nan"), 0)
    ease_matrix = ease(history, regularization)
    trending = non_personalised(history, start, windows)
    best = None
    for days in windows:
        for weight in weights:
            lists = recommend(history, blend(ease_matrix, trending[f"trending {days}d"],
                                             weight), users, k)
            recall = float(np.mean([scoring.recall(lists[u], truth[u], k) for u in users]))
            if best is None or recall > best.validation_recall:
                best = BlendChoice(days, weight, recall, len(users))
    return best
