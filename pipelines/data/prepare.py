"""Turns a Dataset into the pipeline's input: tf.Examples split by time, plus a catalog.

Output under `<out>/`:
  examples/train/*.tfrecord, examples/eval/*.tfrecord  one example per rating, typed by
                                                       the feature spec (ImportExampleGen)
  catalog/users.csv, items.csv, ratings.csv            what the serving side reads
  snapshot.json                                        span, time cut-off, row counts and a
                                                       content hash of everything above
The split is by time: the earliest `train_fraction` of ratings train, the rest evaluate.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd

from libs import feature_spec
from pipelines.data.dataset import Dataset


def _denormalize(data: Dataset) -> pd.DataFrame:
    rows = data.ratings.merge(data.users, on="user_id").merge(data.items, on="item_id")
    return rows.sort_values(["timestamp", "user_id", "item_id"], kind="stable")


def _write_examples(rows: pd.DataFrame, path: Path, progress) -> None:
    import tensorflow as tf  # training environment only

    def feature(value, dtype):
        if dtype == "string":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        if dtype == "int64":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))

    specs = [(f.name, f.dtype) for f in feature_spec.FEATURES]
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
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def prepare(data: Dataset, out: str | Path, train_fraction: float = 0.8,
            progress=print) -> dict:
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    progress = progress or (lambda _message: None)
    out = Path(out)
    for sub in ("examples", "catalog"):
        shutil.rmtree(out / sub, ignore_errors=True)
    rows = _denormalize(data)
    cutoff = int(rows.timestamp.quantile(train_fraction))
    train, evaluation = rows[rows.timestamp < cutoff], rows[rows.timestamp >= cutoff]
    if train.empty or evaluation.empty:
        raise ValueError("the time split left an empty train or eval set; "
                         "use more ratings or another train_fraction")
    progress(f"prepare: {len(train):,} train / {len(evaluation):,} eval ratings "
             f"(time cut-off {pd.to_datetime(cutoff, unit='s')})")
    _write_examples(train, out / "examples" / "train" / "ratings.tfrecord", progress)
    _write_examples(evaluation, out / "examples" / "eval" / "ratings.tfrecord", progress)

    catalog = out / "catalog"
    catalog.mkdir(parents=True)
    data.users.to_csv(catalog / "users.csv", index=False)
    data.items.to_csv(catalog / "items.csv", index=False)
    data.ratings.to_csv(catalog / "ratings.csv", index=False)

    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "snapshot.json")
    snapshot = {
        "source": data.source,
        "span": int(data.ratings.timestamp.max()),
        "time_cutoff": cutoff,
        "train_rows": len(train), "eval_rows": len(evaluation),
        "users": len(data.users), "items": len(data.items),
        "content_sha256": _content_hash(files),
    }
    (out / "snapshot.json").write_text(json.dumps(snapshot, indent=2) + "\n")
    return snapshot
