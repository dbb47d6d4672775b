"""Transform's encoders, run with TensorFlow in the training environment."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from libs import feature_spec  # noqa: E402
from pipelines.training.models import preprocessing  # noqa: E402


def test_fixed_vocabulary_maps_unknown_values_to_the_last_index():
    x = tf.constant([["M"], ["F"], ["?"]])
    index = preprocessing.fixed_vocabulary_index(x, feature_spec.GENDERS).numpy()
    assert index.tolist() == [1, 0, 2]


def test_multi_hot_marks_each_listed_genre():
    x = tf.constant(["Action|Comedy", "Drama", "Nope"])
    hot = preprocessing.multi_hot(x, feature_spec.GENRES).numpy()
    genres = list(feature_spec.GENRES)
    assert hot.shape == (3, len(genres))
    assert hot[0].nonzero()[0].tolist() == [genres.index("Action"), genres.index("Comedy")]
    assert hot[1].nonzero()[0].tolist() == [genres.index("Drama")]
    assert hot[2].sum() == 0


def test_time_of_week_is_periodic_in_days_and_weeks():
    monday_9am = 1_795_770_000 - (1_795_770_000 % 86_400) + 9 * 3600
    t = tf.constant([monday_9am, monday_9am + 7 * 86_400, monday_9am + 86_400],
                    dtype=tf.int64)
    encoded = preprocessing.time_of_week(t).numpy()
    np.testing.assert_allclose(encoded[0], encoded[1], atol=1e-5)  # a week later
    np.testing.assert_allclose(encoded[0][[0, 2]], encoded[2][[0, 2]], atol=1e-5)  # same hour
    assert not np.allclose(encoded[0][[1, 3]], encoded[2][[1, 3]])  # another day


def test_item_history_indexes_the_item_vocabulary_and_pads_with_minus_one(tmp_path):
    vocabulary = tmp_path / "item_id"
    vocabulary.write_text("50\n1\n7\n")
    x = tf.constant([["1 50 999"], [""], ["7 1 50 1"]])
    index = preprocessing.item_history(x[:, 0], 3, str(vocabulary)).numpy()
    assert index.tolist() == [[1, 0, 3], [-1, -1, -1], [2, 1, 0]]  # 999: OOV; cut at 3
