"""Turns a training set (Feast's point-in-time join) into the pipeline's input.

Input: a snapshot `training_sets/span-<S>/` (pipelines/features/training_set.py):
ratings.parquet (one row per label event, columns of the feature spec), items.parquet
(the item catalog the retrieval index holds) and snapshot.json.
Output under `<out>/examples/span-<S>/`, which ImportExampleGen reads as span S:
  train/*.tfrecord, eval/*.tfrecord   one tf.Example per rating, typed by the spec,
                                      with the history features (`with_history`), plus
                                      age_group (SLICE_COLUMNS) to slice evaluations by
  snapshot.json                       the training set's snapshot (span, content hash)
                                      plus the time cut-off, split sizes and a hash of
                                      the examples
Splits (`split_rows`), each with `train_fraction` of the ratings in train:
  time      the earliest ratings train, the rest evaluate: production's protocol, the
            model never sees the future
  random    a seeded random share (the TensorFlow Recommenders tutorials' 80/20)
  per_user  a seeded random share of each user's ratings (Microsoft Recommenders'
            stratified 75/25: every evaluated user has history in train)
History (`with_history`), after the split whatever the protocol, from train ratings
only: a train rating gets its user's other train items (leave one out: never its own
item), an eval rating all its user's train items, as serving passes everything the user
rated before the request.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd

import numpy as np

from libs import feature_spec
from pipelines.data.dataset import DataError

COLUMNS = feature_spec.STORED_FEATURES
# not model inputs: written so the evaluation can slice by them (TFMA slices on features)
SLICE_COLUMNS = {"age_group": "string"}
SPLITS = ("time", "random", "per_user")


def _write_examples(rows: pd.DataFrame, path: Path, progress) -> None:
    import tensorflow as tf  # training environment only

    def feature(value, dtype):
        if dtype == "string":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        if dtype == "int64":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))

    specs = [(f.name, f.dtype) for f in feature_spec.FEATURES] + list(SLICE_COLUMNS.items())
    rows = rows.assign(age_group=rows["age"].map(feature_spec.age_group))
    columns = [rows[name].tolist() for name, _ in specs]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, values in enumerate(zip(*columns)):
            example = tf.train.Example(features=tf.train.Features(feature={
                name: feature(v, dtype) for (name, dtype), v in zip(specs, values)}))
            # map fields serialize in arbitrary order unless asked: the content hash needs
            # the same bytes for the same data
            writer.write(example.SerializeToString(deterministic=True))
            if (i + 1) % 100_000 == 0:
                progress(f"  {path.parent.name}: {i + 1:,} examples written")


def _content_hash(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(f"{path.parent.name}/{path.name}".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def newest_training_set(sets_dir: str | Path) -> Path:
    spans = [p for p in Path(sets_dir).glob("span-*") if p.name[5:].isdigit()]
    if not spans:
        raise DataError(f"{sets_dir}: no training set; build one first (make features: "
                        "batch job, ingestion, point-in-time join)")
    return max(spans, key=lambda p: int(p.name[5:]))


def read_training_set(directory: str | Path, sample_users: float = 1.0
                      ) -> tuple[dict, pd.DataFrame]:
    """The snapshot and its rows; with sample_users < 1, only the sampled users' rows
    become a DataFrame (the set is filtered as an arrow table: 20M rows stay compact)."""
    import pyarrow.parquet as pq

    directory = Path(directory)
    try:
        snapshot = json.loads((directory / "snapshot.json").read_text())
        table = pq.read_table(directory / "ratings.parquet")
    except FileNotFoundError as err:
        raise DataError(f"{err.filename}: not found; not a training set") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{directory / 'ratings.parquet'}: lacks columns {missing}")
    if sample_users < 1.0:
        table = table.filter(in_sample(table.column("user_id").to_pandas(), sample_users))
    return snapshot, table.to_pandas()


def in_sample(user_ids: pd.Series, share: float) -> np.ndarray:
    """Whether each user is in a `share` of the users chosen by a hash of the user id: a
    user is wholly in or out, and the same users are in whatever else the data holds."""
    bucket = pd.util.hash_pandas_object(user_ids, index=False).to_numpy() % 10_000
    return bucket < round(share * 10_000)


def split_rows(rows: pd.DataFrame, split: str = "time", train_fraction: float = 0.8,
               seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, eval), both in time order; see the module's docstring."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    rows = rows.sort_values(["timestamp", "user_id", "item_id"], kind="stable",
                            ignore_index=True)
    rng = np.random.default_rng(seed)
    if split == "time":
        in_train = rows.timestamp < int(rows.timestamp.quantile(train_fraction))
    elif split == "random":
        in_train = pd.Series(False, index=rows.index)
        in_train[rng.permutation(len(rows))[:round(train_fraction * len(rows))]] = True
    else:
        position = (pd.Series(rng.random(len(rows)), index=rows.index)
                    .groupby(rows.user_id).rank(method="first"))
        size = rows.groupby("user_id").user_id.transform("size")
        in_train = position <= (train_fraction * size).round()
    train, evaluation = rows[in_train], rows[~in_train]
    if train.empty or evaluation.empty:
        raise ValueError(f"the {split} split left an empty train or eval set; "
                         "use more ratings or another train_fraction")
    return train, evaluation


def with_history(train: pd.DataFrame, evaluation: pd.DataFrame
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both splits with `rated_items` (see the module's docstring)."""
    rated = train.groupby("user_id").item_id.agg(lambda items: sorted(set(items)))
    separator = feature_spec.ITEM_SEPARATOR

    def others(user, item):
        return separator.join(i for i in rated[user] if i != item)

    train = train.assign(rated_items=[others(u, i) for u, i in zip(train.user_id,
                                                                     train.item_id)])
    full = {user: separator.join(items) for user, items in rated.items()}
    evaluation = evaluation.assign(rated_items=[full.get(u, "")
                                                for u in evaluation.user_id])
    return train, evaluation


def prepare(training_set: str | Path, out: str | Path, train_fraction: float = 0.8,
            split: str = "time", seed: int = 42, progress=print,
            sample_users: float = 1.0) -> dict:
    progress = progress or (lambda _message: None)
    snapshot, sampled = read_training_set(training_set, sample_users)
    if sampled.empty:
        raise ValueError(f"sample_users={sample_users} keeps none of the users")
    train, evaluation = with_history(*split_rows(sampled, split, train_fraction, seed))
    sample = (f", {sample_users:.0%} of users: {len(sampled):,} of {snapshot['rows']:,} "
              "ratings" if sample_users < 1.0 else "")
    progress(f"prepare: span {snapshot['span']}: {len(train):,} train / "
             f"{len(evaluation):,} eval ratings ({split} split{sample})")
    span_dir = Path(out) / "examples" / f"span-{snapshot['span']}"
    shutil.rmtree(span_dir, ignore_errors=True)
    _write_examples(train, span_dir / "train" / "ratings.tfrecord", progress)
    _write_examples(evaluation, span_dir / "eval" / "ratings.tfrecord", progress)
    snapshot = {**snapshot, "training_set": str(Path(training_set).resolve()),
                "split": split, "train_fraction": train_fraction, "split_seed": seed,
                "sample_users": sample_users, "sampled_rows": len(sampled),
                "train_rows": len(train),
                "eval_rows": len(evaluation),
                "examples_sha256": _content_hash(sorted(span_dir.rglob("*.tfrecord")))}
    (span_dir / "snapshot.json").write_text(json.dumps(snapshot, indent=2) + "\n")
    return snapshot
