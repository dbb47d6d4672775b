"""Simulated users for experiments: each rating history is split in time into a history
(what the recommenders learn from) and a future (what the user would go on to watch),
and each recommender's ranked list of unseen items is computed once per user.

  ease      EASE (pipelines.training.baselines) fitted on the histories: personalised
  popular   the items most rated in the histories: the same for everyone
A served item is relevant when it is in the user's future, so the two arms truly differ in
quality, and by how much is whatever the data says, not a number we chose.
"""
from __future__ import annotations

import time
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


def ranked_lists(train: pd.DataFrame, exclude: pd.DataFrame, policy: str, depth: int
                 ) -> dict:
    """{user: `policy`'s `depth` best items}, learnt from `train`, leaving out each
    user's items in `exclude` (what serving filters: the user's rated items)."""
    index = baselines.Index.of(train)
    seen = index.interactions(train)
    if policy == "ease":
        score = baselines.ease_scores(seen)
    else:  # every user gets the same popularity order; excluded items are removed below
        score = np.broadcast_to(seen.sum(axis=0), seen.shape).astype(float)
    known = exclude[exclude.user_id.isin(index.users) & exclude.item_id.isin(index.items)]
    return baselines.top_items(score, index, depth, exclude=index.interactions(known))


def _futures(users, future: pd.DataFrame) -> list[dict[str, float]]:
    by_user = {user: dict(zip(group.item_id, group.rating))
               for user, group in future.groupby("user_id")}
    return [by_user.get(user, {}) for user in users]


def build(ratings: pd.DataFrame, source: str, history_fraction: float = 0.8,
          depth: int = 50) -> World:
    history, future = split_in_time(ratings, history_fraction)
    users = sorted(history.user_id.unique())
    ranked = {policy: ranked_lists(history, history, policy, depth) for policy in POLICIES}
    return World(source, {policy: np.array([tops[user] for user in users], dtype=object)
                          for policy, tops in ranked.items()}, _futures(users, future))


def taking_off(ratings: pd.DataFrame, source: str, items: int = 40,
               history_fraction: float = 0.6, recent_fraction: float = 0.2,
               depth: int = 50) -> tuple[World, dict]:
    """The population's taste shifts: `items` titles take off after the stable model was
    trained. Each user's ratings split in time into history, recent and future; the
    titles whose ratings rose most from history to later are the ones taking off, and
    they are left out of the history (they were not out yet). Policies:
      stale      EASE on the history: the stable model, blind to the new titles
      retrained  EASE on history and recent ratings: what the loop's retraining learns
      popular    the history's most rated: a deliberately worse candidate
    Every policy leaves out what the user rated up to the future (serving filters it)."""
    history, later = split_in_time(ratings, history_fraction)
    share = recent_fraction / (1 - history_fraction)
    recent, future = split_in_time(later, share) if share < 1 else (later, later[:0])
    rises = (later.item_id.value_counts()
             / (history.item_id.value_counts().reindex(later.item_id.unique()).fillna(0) + 5))
    new = set(rises.sort_values(ascending=False, kind="stable").index[:items])
    before = history[~history.item_id.isin(new)]
    seen = pd.concat([history, recent])
    trained = {"stale": (before, "ease"), "retrained": (pd.concat([before, recent]), "ease"),
               "popular": (before, "popular")}
    users = sorted(seen.user_id.unique())
    ranked, seconds = {}, {}
    for policy, (train, kind) in trained.items():
        started = time.perf_counter()
        tops = ranked_lists(train, seen, kind, depth)
        seconds[policy] = time.perf_counter() - started
        ranked[policy] = np.array([tops.get(user, []) for user in users], dtype=object)
    info = {"items_taking_off": sorted(new, key=str), "retrain_seconds": seconds["retrained"],
            "share_of_recent": float(recent.item_id.isin(new).mean()),
            "share_of_future": float(future.item_id.isin(new).mean())}
    return World(source, ranked, _futures(users, future)), info


def movielens_world(directory: str | Path) -> World:
    return build(movielens.load(directory).ratings, f"MovieLens 100K ({directory})")


def synthetic_world(users: int = 300, items: int = 200, ratings: int = 9_000,
                    seed: int = 7) -> World:
    """Small generated users, so tests need neither MovieLens nor much time."""
    data = synthetic.generate(num_users=users, num_items=items, num_ratings=ratings,
                              seed=seed)
    return build(data.ratings, data.source)
