"""Data preparation: a time split and a content hash that identifies the data."""
import json

from pipelines.data import prepare, synthetic


def test_time_split_and_reproducible_content_hash(tmp_path):
    data = synthetic.generate(100, 150, 3000, seed=5)
    first = prepare.prepare(data, tmp_path / "a", progress=None)
    second = prepare.prepare(data, tmp_path / "b", progress=None)
    assert first["content_sha256"] == second["content_sha256"]
    assert (first["train_rows"], first["eval_rows"]) == (2400, 600)
    stored = json.loads((tmp_path / "a" / "snapshot.json").read_text())
    assert stored == first
    other = prepare.prepare(synthetic.generate(100, 150, 3000, seed=6), tmp_path / "c",
                            progress=None)
    assert other["content_sha256"] != first["content_sha256"]


def test_eval_ratings_all_come_after_training_ratings(tmp_path):
    data = synthetic.generate(100, 150, 3000, seed=5)
    snapshot = prepare.prepare(data, tmp_path, progress=None)
    times = data.ratings.timestamp
    assert (times < snapshot["time_cutoff"]).sum() == snapshot["train_rows"]
