"""Data preparation: a training set snapshot -> examples of its span, split by time, with
a hash that identifies them."""
import json

import pytest

from pipelines.data import prepare, synthetic
from pipelines.data.dataset import DataError


def training_set(directory, seed=5):
    """A training set as pipelines/features/training_set.py writes one."""
    data = synthetic.generate(100, 150, 3000, seed=seed)
    rows = data.ratings.merge(data.users, on="user_id").merge(data.items, on="item_id")
    directory.mkdir(parents=True)
    rows[list(prepare.COLUMNS)].to_parquet(directory / "ratings.parquet", index=False)
    span = int(rows.timestamp.max())
    (directory / "snapshot.json").write_text(json.dumps(
        {"span": span, "content_sha256": f"hash-{seed}", "rows": len(rows)}))
    return data, span


def test_examples_land_in_their_span_with_a_reproducible_hash(tmp_path):
    _, span = training_set(tmp_path / "set")
    first = prepare.prepare(tmp_path / "set", tmp_path / "a", progress=None)
    second = prepare.prepare(tmp_path / "set", tmp_path / "b", progress=None)
    assert first["examples_sha256"] == second["examples_sha256"]
    assert (first["span"], first["content_sha256"]) == (span, "hash-5")
    assert (first["train_rows"], first["eval_rows"]) == (2400, 600)
    span_dir = tmp_path / "a" / "examples" / f"span-{span}"
    assert json.loads((span_dir / "snapshot.json").read_text()) == first
    assert (span_dir / "train" / "ratings.tfrecord").stat().st_size > 0
    training_set(tmp_path / "other", seed=6)
    other = prepare.prepare(tmp_path / "other", tmp_path / "c", progress=None)
    assert other["examples_sha256"] != first["examples_sha256"]


def test_eval_ratings_all_come_after_training_ratings(tmp_path):
    data, _ = training_set(tmp_path / "set")
    snapshot = prepare.prepare(tmp_path / "set", tmp_path / "out", progress=None)
    times = data.ratings.timestamp
    assert (times < snapshot["time_cutoff"]).sum() == snapshot["train_rows"]


def test_the_newest_span_is_found_and_a_missing_set_is_named(tmp_path):
    for span in (9, 100, 12):
        (tmp_path / f"span-{span}").mkdir()
    assert prepare.newest_training_set(tmp_path).name == "span-100"
    with pytest.raises(DataError, match="no training set"):
        prepare.newest_training_set(tmp_path / "empty")
    with pytest.raises(DataError, match="not a training set"):
        prepare.prepare(tmp_path / "span-100", tmp_path / "out", progress=None)
