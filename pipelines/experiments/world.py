"""Simulated users for experiments: each rating history is split in time into a history
(what the recommenders learn from) and a future (what the user would go on to watch),
and each recommender's ranked list of unseen items is computed once per user.

  ease      EASE (pipelines.training.baselines) fitted on the histories: personalised
  popular   the items most rated in the histories: the same for everyone
A served item is relevant when it is in the user's future, so the two arms truly differ in
quality, and by how much is whatever the data says, not a number we chose.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data import movielens, synthetic
from pipelines.training import baselines

POLICIES = ("ease", "popular")


@dataclass
class World:
    source: str
    ranked: dict[str, np.ndarray]  # policy -> (users, depth) item ids, best first
    futures: list[dict[str, float]]  # per user: future item -> its rating

    @property
    def size(self) -> int:
        return len(self.futures)


def split_in_time(ratings: pd.DataFrame, history_fraction: float
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's earliest ratings are history, the rest future (at least one of each
    for users with two or more ratings)."""
    ordered = ratings.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    position = ordered.groupby("user_id").cumcount()
    size = ordered.groupby("user_id").user_id.transform("size")
    cut = np.clip(np.floor(size * history_fraction), 1, size - 1)
    in_history = (position < cut) | (size < 2)
    return ordered[in_history], ordered[~in_history]


def build(ratings: pd.DataFrame, source: str, history_fraction: float = 0.8,
          depth: int = 50) -> World:
    history, future = split_in_time(ratings, history_fraction)
    index = baselines.Index.of(history)
    seen = index.interactions(history)
    scores = {"ease": baselines.ease_scores(seen),
              # every user gets the same popularity order; seen items are removed below
              "popular": np.broadcast_to(seen.sum(axis=0), seen.shape).astype(float)}
    ranked = {}
    for policy, score in scores.items():
        tops = baselines.top_items(score, index, depth, exclude=seen)
        ranked[policy] = np.array([tops[user] for user in index.users], dtype=object)
    by_user = {user: dict(zip(group.item_id, group.rating))
               for user, group in future.groupby("user_id")}
    futures = [by_user.get(user, {}) for user in index.users]
    return World(source, ranked, futures)


def movielens_world(directory: str | Path) -> World:
    return build(movielens.load(directory).ratings, f"MovieLens 100K ({directory})")


def synthetic_world(users: int = 300, items: int = 200, ratings: int = 9_000,
                    seed: int = 7) -> World:
    """Small generated users, so tests need neither MovieLens nor much time."""
    data = synthetic.generate(num_users=users, num_items=items, num_ratings=ratings,
                              seed=seed)
    return build(data.ratings, data.source)
