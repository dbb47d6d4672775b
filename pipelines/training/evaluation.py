"""Offline retrieval metrics, shared by the pipeline's RetrievalEvaluator and the
benchmark's baselines so a model and its baselines are scored the same way.

  top_k_accuracy   share of eval ratings whose item is in the top k for that rating's
                   query, over the whole catalog, seen items kept (the TensorFlow
                   Recommenders tutorials' "factorized top-k accuracy")
  recall / NDCG@k  per user: the top k of items the user has not rated in train, against
                   the user's eval items, averaged over users (Microsoft Recommenders'
                   definitions: recall divides by all relevant items, NDCG's ideal DCG
                   by min(k, relevant))
Pure Python and NumPy.
"""
from __future__ import annotations

import collections
import math
from typing import Hashable, Iterable


def top_k_accuracy(top_items: Iterable[Iterable], truth: Iterable) -> float:
    rows = [(t, set(top)) for top, t in zip(top_items, truth)]
    return sum(t in top for t, top in rows) / max(len(rows), 1)


def user_recall_ndcg(recommended: list, items: set, k: int) -> tuple[float, float]:
    """One user's Recall@k (hits / relevant items) and binary NDCG@k."""
    gains = [1.0 if item in items else 0.0 for item in recommended[:k]]
    dcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(items))))
    return sum(gains) / len(items), dcg / ideal


def recall_ndcg_at_k(recommended: dict[Hashable, list], relevant: dict[Hashable, set],
                     k: int) -> tuple[float, float]:
    recalls, ndcgs = [], []
    for user, items in relevant.items():
        recall, ndcg = user_recall_ndcg(recommended.get(user, []), items, k)
        recalls.append(recall)
        ndcgs.append(ndcg)
    n = max(len(relevant), 1)
    return sum(recalls) / n, sum(ndcgs) / n


def by_user(users: Iterable, items: Iterable) -> dict[Hashable, set]:
    grouped = collections.defaultdict(set)
    for user, item in zip(users, items):
        grouped[user].add(item)
    return dict(grouped)


def unseen_top_k(ranked: Iterable, seen: set, k: int) -> list:
    """The first k of a ranking that are not in `seen`."""
    out = []
    for item in ranked:
        if item not in seen:
            out.append(item)
            if len(out) == k:
                break
    return out


def most_popular(train_items: Iterable, n: int | None = None) -> list:
    return [item for item, _ in collections.Counter(train_items).most_common(n)]


def popularity_metrics(train_users: list, train_items: list, eval_users: list,
                       eval_items: list, k: int = 100, cutoff: int = 10) -> dict:
    """The most-popular baseline's top-k accuracy and Recall / NDCG@cutoff."""
    ranked = most_popular(train_items)
    seen = by_user(train_users, train_items)
    relevant = by_user(eval_users, eval_items)
    recall, ndcg = recall_ndcg_at_k(
        {u: unseen_top_k(ranked, seen.get(u, set()), cutoff) for u in relevant},
        relevant, cutoff)
    return {"top_k_accuracy": top_k_accuracy([ranked[:k]] * len(eval_items), eval_items),
            f"recall_at_{cutoff}": recall, f"ndcg_at_{cutoff}": ndcg}
