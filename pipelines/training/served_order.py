"""What the candidate service serves each user, computed in process for a benchmark split.

`make bench-models` scores models on published splits that are not time cuts (random,
per user), so the real stack, whose feature store holds every rating, cannot be asked:
it would know the eval ratings. Here the retrieval version the pipeline pushed answers
as the candidate service asks it (the user's train ratings as history, the request at
the train data's end), its sources are built from the train split by the code the
Trainer runs (models/sources.py), and the service's own `merge` orders the union by the
blend: the default experiment arm's answer, without the network.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from libs import candidate_sources as cs, feature_spec, trends
from pipelines.training import evaluation
from pipelines.training.models import sources
from services.candidate.merge import TREND_DEPTH, merge

NUM_CANDIDATES = 100  # what the shipped experiment asks the candidate service for
DTYPES = {"string": "string", "int64": "int64", "float": "float32"}


def newest_version(model_repo: Path, name: str = feature_spec.MODEL_NAMES.retrieval
                   ) -> Path | None:
    versions = [p for p in (model_repo / name).glob("*") if p.name.isdigit()
                and (p / "saved_model.pb").exists()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def _query(train: pd.DataFrame, users: list, at: int, k: int) -> dict:
    """The retrieval signature's inputs for `users`: their latest profile, all their
    train ratings as history, the request time."""
    import tensorflow as tf

    latest = train.sort_values("timestamp").groupby("user_id").tail(1).set_index("user_id")
    rated = train.groupby("user_id").item_id.agg(feature_spec.join_items)
    columns = {n: list(users) if n == "user_id" else latest.loc[users, n].tolist()
               for n in feature_spec.USER_FEATURES}
    columns["rated_items"] = rated.loc[users].tolist()
    columns["timestamp"] = [at] * len(users)
    inputs = {n: tf.constant(v, DTYPES[feature_spec.BY_NAME[n].dtype])
              for n, v in columns.items()}
    return {**inputs, "k": tf.constant(k, tf.int32)}


def _events(train: pd.DataFrame) -> pd.DataFrame:
    """(user_id, item_id, timestamp) with string ids, as the sources are built from."""
    return train[["user_id", "item_id", "timestamp"]].astype({"user_id": str, "item_id": str})


def two_tower_lists(model_dir: Path, train: pd.DataFrame, users: list, at: int,
                    batch: int = 256) -> dict[str, list[tuple[str, float]]]:
    """Each user's two-tower (item, score) list, deep enough to leave NUM_CANDIDATES
    after their train items are removed (as the candidate service asks)."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    seen = train.groupby("user_id").item_id.agg(set)
    k = min(NUM_CANDIDATES + int(seen.map(len).max()), train.item_id.nunique())
    out = {}
    for lo in range(0, len(users), batch):
        part = users[lo:lo + batch]
        found = serve(**_query(train, part, at, k))
        for user, ids, scores in zip(part, found["item_ids"].numpy(),
                                     found["scores"].numpy()):
            ranked = [(i.decode(), float(s)) for i, s in zip(ids, scores)
                      if i.decode() not in seen[user]]
            out[user] = ranked[:NUM_CANDIDATES]
    return out


def served_lists(model_dir: Path, train: pd.DataFrame, version_sources, users: list,
                 n: int = 10) -> dict[str, list[str]]:
    """Each user's top `n` as the candidate service orders them with `version_sources`
    (two-tower and every other source, blended; None: the two-tower alone), asked at the
    train split's end; a user without train ratings gets the service's fallback, the
    items trending over trends.TRENDING_DAYS."""
    at = int(train.timestamp.max()) + 1
    ratings = _events(train)
    table = trends.trend_table(zip(ratings.item_id, ratings.timestamp), at)
    window = trends.WINDOWS.index(trends.TRENDING_DAYS)
    fallback = [item for item, _ in trends.trending(
        {i: row[window] for i, row in table.items()}, {i: row[-2] for i, row in table.items()}
    )[:n]]
    known = set(ratings.user_id)
    out = {u: fallback for u in users if u not in known}
    users = [u for u in users if u in known]
    towers = two_tower_lists(model_dir, train, users, at)
    if version_sources is None:
        return {**out, **{u: [i for i, _ in towers[u][:n]] for u in users}}
    orders = cs.TrendOrders(table, depth=TREND_DEPTH)
    rated = ratings.groupby("user_id").item_id.agg(set)
    recent = sources.latest_items(ratings)
    for u in users:
        out[u] = [c.item_id for c in merge(version_sources, set(cs.SOURCES), towers[u],
                                           rated[u], recent[u], rated[u], orders, at, n)]
    return out


def served_metrics(model_repo: Path, train: pd.DataFrame, evaluation_rows: pd.DataFrame,
                   catalog: pd.DataFrame, progress=print) -> dict | None:
    """Recall@10 and NDCG@10 (per user, train items removed) of what is served to every
    eval user, as the other methods are scored; None when no retrieval version was
    pushed."""
    model_dir = newest_version(model_repo)
    if model_dir is None:
        return None
    relevant = evaluation.by_user(evaluation_rows.user_id, evaluation_rows.item_id)
    # the version's own sources were built from every rating, eval ones too: rebuilt
    # from the train split by the Trainer's code
    ratings = _events(train)
    built, _ = sources.build(ratings, catalog.astype({"item_id": str}), progress=progress)
    lists = served_lists(model_dir, train, built, sorted(relevant))
    recall, ndcg = evaluation.recall_ndcg_at_k(lists, relevant, 10)
    return {"recall_at_10": recall, "ndcg_at_10": ndcg, "users": len(relevant),
            "new_users": len(set(relevant) - set(train.user_id)),
            "catalog_coverage": len({i for items in lists.values() for i in items})
            / max(train.item_id.nunique(), 1), "model_version": int(model_dir.name)}
