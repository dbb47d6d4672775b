"""The retrieval model's history pieces: masked mean of history embeddings, and the
catalog softmax that leaves the user's other rated items out."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from libs import feature_spec  # noqa: E402
from libs.feature_spec import transformed_name  # noqa: E402
from pipelines.training.models import retrieval, towers  # noqa: E402

SIZES = {"user_id": 5, "item_id": 4, "rated_items": 4, "age": 7, "gender": 3,
         "occupation": len(feature_spec.OCCUPATIONS) + 1}


def catalog(indices):
    n = len(indices)
    return {transformed_name("item_id"): tf.constant([[i] for i in indices], tf.int64),
            transformed_name("genres"): tf.zeros([n, len(feature_spec.GENRES)]),
            transformed_name("release_year"): tf.zeros([n, 1])}


def test_history_embedding_is_the_mean_over_real_items_and_zero_when_empty():
    layer = towers.HistoryEmbedding(4, 2)
    history = tf.constant([[0, 2, -1], [-1, -1, -1]], tf.int64)
    out = layer(history).numpy()
    table = layer.embedding.embeddings.numpy()
    np.testing.assert_allclose(out[0], (table[0] + table[2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[1], 0.0)


def test_history_dropout_only_applies_in_training():
    tf.random.set_seed(3)
    history = tf.constant([[0, 1, 2, 3]], tf.int64)
    everything = towers.HistoryEmbedding(4, 2, dropout=1.0)
    assert not np.allclose(everything(history).numpy(), 0.0)
    assert np.allclose(everything(history, training=True).numpy(), 0.0)
    half = towers.HistoryEmbedding(4, 2, dropout=0.5)
    half(history)  # builds the table
    table = half.embedding.embeddings.numpy()
    subsets = {tuple(np.round(half(history, training=True).numpy()[0], 5))
               for _ in range(30)}
    assert len(subsets) > 2  # different items dropped on different calls
    means = [np.round(table[list(s)].mean(0), 5) for s in
             ([0], [1], [2], [3], [0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3],
              [0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3], [0, 1, 2, 3])]
    assert all(any(np.allclose(s, m, atol=1e-4) for m in means) or np.allclose(s, 0)
               for s in subsets)  # each a mean over the items kept


def test_catalog_softmax_masks_the_users_other_rated_items():
    hp = {**retrieval.DEFAULTS, "query_features": ["rated_items"]}
    # catalog rows in another order than the item indices: rows map back correctly
    model = retrieval.TwoTower(SIZES, hp, np.full(4, 0.25), catalog([2, 0, 1, 3]))
    history = tf.constant([[0, 3, -1], [-1, -1, -1]], tf.int64)
    logits = model._without_history(tf.zeros([2, 4]), {transformed_name("rated_items"):
                                                       history}).numpy()
    assert (logits[0] < -1e8).tolist() == [False, True, False, True]  # rows of 0 and 3
    assert (logits[1] == 0).all()


def test_unknown_hyperparameter_values_are_named():
    with pytest.raises(ValueError, match="negatives"):
        retrieval.TwoTower(SIZES, {**retrieval.DEFAULTS, "negatives": "all"},
                           np.full(4, 0.25), catalog([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="query_features"):
        retrieval.TwoTower(SIZES, {**retrieval.DEFAULTS, "query_features": ["genres"]},
                           np.full(4, 0.25), catalog([0, 1, 2, 3]))
