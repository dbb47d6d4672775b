"""How a list of recommendations is judged against what the user did after the cut.

  Recall@k     hits / number of future items (as Microsoft Recommenders and the issue
               tracker's baselines count it; a user with 40 future items reaches 0.25 at most)
  NDCG@k       binary relevance, ideal DCG over min(k, future items) positions
  coverage     distinct items recommended to the group / items in the catalog at the cut
  long tail    share of recommended items outside the head (the `head_fraction` most
               rated before the cut)
Means come with a percentile bootstrap interval over users (users are the unit).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from pipelines.training.evaluation import user_recall_ndcg  # the pipeline's definitions


def future_items(after: pd.DataFrame, users: set[str] | None = None) -> dict[str, set[str]]:
    """{user: items rated after the cut}, optionally only for `users`."""
    rows = after if users is None else after[after.user_id.isin(users)]
    return {u: set(items) for u, items in rows.groupby("user_id").item_id}


def recall(items: list[str], truth: set[str], k: int) -> float:
    return user_recall_ndcg(items, truth, k)[0]


def ndcg(items: list[str], truth: set[str], k: int) -> float:
    return user_recall_ndcg(items, truth, k)[1]


@dataclass
class Interval:
    mean: float
    low: float
    high: float


def bootstrap(values: np.ndarray, samples: int, seed: int) -> Interval:
    if len(values) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (samples, len(values)))].mean(axis=1)
    return Interval(float(values.mean()), float(np.percentile(means, 2.5)),
                    float(np.percentile(means, 97.5)))


@dataclass
class Score:
    users: int
    recall: Interval
    ndcg: Interval
    coverage: float
    long_tail: float

    def as_dict(self) -> dict:
        return asdict(self)


def score(lists: dict[str, list[str]], truth: dict[str, set[str]], k: int,
          head: set[str], catalog_size: int, samples: int = 1000, seed: int = 42) -> Score:
    """Scores every user in `truth`; a user with no list counts as all misses."""
    users = sorted(truth)
    per_user = np.array([user_recall_ndcg(lists.get(u, []), truth[u], k) for u in users]
                        ).reshape(-1, 2)
    recalls, ndcgs = per_user[:, 0], per_user[:, 1]
    shown = [i for u in users for i in lists.get(u, [])[:k]]
    return Score(len(users), bootstrap(recalls, samples, seed), bootstrap(ndcgs, samples, seed),
                 len(set(shown)) / max(catalog_size, 1),
                 float(np.mean([i not in head for i in shown])) if shown else float("nan"))


def head_items(counts: pd.Series, fraction: float) -> set[str]:
    """The most rated `fraction` of the catalog (counts: ratings per item id)."""
    size = max(1, int(round(fraction * len(counts))))
    return set(counts.sort_values(ascending=False, kind="stable").index[:size])
