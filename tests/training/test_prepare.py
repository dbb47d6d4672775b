"""Data preparation: a training set snapshot -> examples of its span, split by time, with
a hash that identifies them."""
import json

import pandas as pd
import pytest

from libs import feature_spec
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


def split_of(split, fraction, seed=42):
    data = synthetic.generate(100, 150, 3000, seed=5)
    rows = data.ratings.merge(data.users, on="user_id").merge(data.items, on="item_id")
    return prepare.split_rows(rows, split, fraction, seed)


def test_time_split_evaluates_only_ratings_after_every_training_rating():
    train, evaluation = split_of("time", 0.8)
    assert train.timestamp.max() < evaluation.timestamp.min()
    assert len(train) == 2400


def test_random_split_is_seeded_and_keeps_the_fraction():
    train, evaluation = split_of("random", 0.8)
    again, _ = split_of("random", 0.8)
    other, _ = split_of("random", 0.8, seed=7)
    assert (len(train), len(evaluation)) == (2400, 600)
    assert train.equals(again) and not train.equals(other)


def test_per_user_split_keeps_each_users_share_in_train():
    train, evaluation = split_of("per_user", 0.75)
    per_user = train.groupby("user_id").size() / pd.concat([train, evaluation]).groupby(
        "user_id").size()
    assert per_user.between(0.6, 0.9).all()  # rounding on small histories
    assert set(evaluation.user_id) <= set(train.user_id)
    assert abs(len(train) / 3000 - 0.75) < 0.01


def test_the_newest_span_is_found_and_a_missing_set_is_named(tmp_path):
    for span in (9, 100, 12):
        (tmp_path / f"span-{span}").mkdir()
    assert prepare.newest_training_set(tmp_path).name == "span-100"
    with pytest.raises(DataError, match="no training set"):
        prepare.newest_training_set(tmp_path / "empty")
    with pytest.raises(ValueError, match="split must be one of"):
        split_of("by_moon", 0.8)
    with pytest.raises(DataError, match="not a training set"):
        prepare.prepare(tmp_path / "span-100", tmp_path / "out", progress=None)


def test_examples_carry_the_age_group_to_slice_evaluations_by(tmp_path):
    import tensorflow as tf

    _, span = training_set(tmp_path / "set")
    prepare.prepare(tmp_path / "set", tmp_path / "a", progress=None)
    path = tmp_path / "a" / "examples" / f"span-{span}" / "eval" / "ratings.tfrecord"
    for record in tf.data.TFRecordDataset(str(path)).take(20):
        features = tf.train.Example.FromString(record.numpy()).features.feature
        age = features["age"].int64_list.value[0]
        assert features["age_group"].bytes_list.value[0].decode() == \
            prepare.feature_spec.age_group(age)
def test_history_comes_from_train_only_and_leaves_the_rated_item_out():
    train, evaluation = prepare.with_history(*split_of("per_user", 0.75))
    rated = train.groupby("user_id").item_id.agg(set)
    separator = feature_spec.ITEM_SEPARATOR
    for row in train.itertuples():
        history = row.rated_items.split(separator) if row.rated_items else []
        assert history == sorted(history) and row.item_id not in history
        assert set(history) == rated[row.user_id] - {row.item_id}
    for row in evaluation.itertuples():
        assert row.rated_items == separator.join(sorted(rated[row.user_id]))
    # a user with no train ratings gets an empty history
    newcomer = evaluation.iloc[:1].assign(user_id="newcomer")
    assert prepare.with_history(train, newcomer)[1].rated_items.tolist() == [""]


def test_a_sample_of_users_keeps_each_chosen_user_whole_and_the_same_users(tmp_path):
    training_set(tmp_path / "set")
    _, rows = prepare.read_training_set(tmp_path / "set")
    _, half = prepare.read_training_set(tmp_path / "set", sample_users=0.5)
    assert 0.3 < half.user_id.nunique() / rows.user_id.nunique() < 0.7
    # a chosen user comes with every rating; the choice holds on shuffled, smaller data
    per_user, kept = rows.user_id.value_counts(), half.user_id.value_counts()
    assert kept.equals(per_user[kept.index])
    shuffled = rows.sample(frac=0.6, random_state=1)
    again = shuffled[prepare.in_sample(shuffled.user_id, 0.5)]
    assert set(again.user_id) <= set(half.user_id)
    snapshot = prepare.prepare(tmp_path / "set", tmp_path / "a", progress=None,
                               sample_users=0.5)
    assert snapshot["train_rows"] + snapshot["eval_rows"] == len(half) == \
        snapshot["sampled_rows"]
    with pytest.raises(ValueError, match="keeps none"):
        prepare.prepare(tmp_path / "set", tmp_path / "b", progress=None,
                        sample_users=0.00001)


@pytest.mark.parametrize("share", [0.0, 1.5])
def test_a_sample_outside_0_1_is_refused_naming_the_field(share):
    from pipelines.training.config import PipelineConfig
    with pytest.raises(ValueError, match="field 'sample_users'"):
        PipelineConfig(sample_users=share).validate()
