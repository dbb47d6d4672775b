"""Baselines a model must beat in the same run (NumPy only):

  most popular   items by number of train ratings
  EASE           closed-form item-to-item model (Steck, 2019), lambda 250: a strong peer
                 on MovieLens 100K
  biased MF      explicit matrix factorization with user and item biases, fitted by
                 alternating least squares: the rating baseline
Each works on integer-indexed users and items (`Index`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Index:
    users: pd.Index
    items: pd.Index

    @classmethod
    def of(cls, train: pd.DataFrame) -> "Index":
        return cls(pd.Index(sorted(train.user_id.unique())),
                   pd.Index(sorted(train.item_id.unique())))

    def codes(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices; -1 for users or items train never saw."""
        return self.users.get_indexer(frame.user_id), self.items.get_indexer(frame.item_id)

    def interactions(self, train: pd.DataFrame) -> np.ndarray:
        users, items = self.codes(train)
        matrix = np.zeros((len(self.users), len(self.items)), dtype=np.float32)
        matrix[users, items] = 1.0
        return matrix


def ease_scores(interactions: np.ndarray, regularization: float = 250.0) -> np.ndarray:
    gram = interactions.T @ interactions + regularization * np.eye(interactions.shape[1])
    precision = np.linalg.inv(gram)
    weights = -precision / np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return interactions @ weights


@dataclass
class BiasedMF:
    mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings; unknown users or items (-1) get only the known terms."""
        known_u, known_i = users >= 0, items >= 0
        out = np.full(len(users), self.mean)
        out[known_u] += self.user_bias[users[known_u]]
        out[known_i] += self.item_bias[items[known_i]]
        both = known_u & known_i
        out[both] += np.einsum("ij,ij->i", self.user_factors[users[both]],
                               self.item_factors[items[both]])
        return np.clip(out, 1.0, 5.0)

    def scores(self) -> np.ndarray:
        """Every user's predicted rating of every item (users x items)."""
        return (self.mean + self.user_bias[:, None] + self.item_bias[None, :]
                + self.user_factors @ self.item_factors.T)


def _solve(rows: np.ndarray, cols: np.ndarray, residual: np.ndarray, fixed: np.ndarray,
           n: int, regularization: float) -> tuple[np.ndarray, np.ndarray]:
    """Least squares for each row's bias and factors, the other side held fixed."""
    design = np.hstack([np.ones((len(fixed), 1)), fixed])  # [bias, factors]
    dim = design.shape[1]
    bias, factors = np.zeros(n), np.zeros((n, dim - 1))
    order = np.argsort(rows, kind="stable")
    bounds = np.searchsorted(rows[order], np.arange(n + 1))
    for row in range(n):
        picked = order[bounds[row]:bounds[row + 1]]
        if len(picked) == 0:
            continue
        x = design[cols[picked]]
        solution = np.linalg.solve(x.T @ x + regularization * np.eye(dim),
                                   x.T @ residual[picked])
        bias[row], factors[row] = solution[0], solution[1:]
    return bias, factors


def fit_biased_mf(users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                  n_users: int, n_items: int, factors: int = 20,
                  regularization: float = 8.0, iterations: int = 12,
                  seed: int = 42) -> BiasedMF:
    rng = np.random.default_rng(seed)
    mean = float(ratings.mean())
    user_f = rng.normal(0, 0.1, (n_users, factors))
    item_f = rng.normal(0, 0.1, (n_items, factors))
    user_b, item_b = np.zeros(n_users), np.zeros(n_items)
    for _ in range(iterations):
        user_b, user_f = _solve(users, items, ratings - mean - item_b[items],
                                item_f, n_users, regularization)
        item_b, item_f = _solve(items, users, ratings - mean - user_b[users],
                                user_f, n_items, regularization)
    return BiasedMF(mean, user_b, item_b, user_f, item_f)


def top_items(scores: np.ndarray, index: Index, k: int,
              exclude: np.ndarray | None = None) -> dict:
    """{user id: its k best item ids}, excluding `exclude` (users x items, 1 = drop)."""
    scores = scores if exclude is None else np.where(exclude > 0, -np.inf, scores)
    best = np.argpartition(-scores, k, axis=1)[:, :k]
    ordered = np.take_along_axis(best, np.argsort(
        -np.take_along_axis(scores, best, axis=1), axis=1), axis=1)
    return {user: list(index.items[row]) for user, row in zip(index.users, ordered)}


def item_mean_ratings(train_items, train_ratings, eval_items, prior: float = 5.0
                      ) -> np.ndarray:
    """The rating baseline a ranking model must beat: each item's mean train rating,
    damped towards the global mean by `prior` ratings (unrated items get the mean)."""
    train = pd.DataFrame({"item": list(train_items), "rating": np.asarray(train_ratings,
                                                                          float)})
    mean = train.rating.mean()
    stats = train.groupby("item").rating.agg(["sum", "count"])
    damped = (stats["sum"] + prior * mean) / (stats["count"] + prior)
    return pd.Series(list(eval_items)).map(damped).fillna(mean).to_numpy()
