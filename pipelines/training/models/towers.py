"""Small Keras building blocks over Transform outputs: feature encoders and towers."""
from __future__ import annotations

import tensorflow as tf

from libs import feature_spec
from libs.feature_spec import transformed_name

EMBEDDING_DIMS = {"user_id": 32, "item_id": 32, "age": 4, "gender": 2, "occupation": 8}


def cardinalities(tf_transform_output) -> dict[str, int]:
    """Number of distinct indices each categorical Transform output can take."""
    sizes = {}
    for f in feature_spec.FEATURES:
        if f.encoding == "learned_vocabulary":
            sizes[f.name] = tf_transform_output.vocabulary_size_by_name(f.name) + 1  # + OOV
        elif f.encoding == "fixed_vocabulary":
            sizes[f.name] = len(f.vocabulary) + 1
        elif f.encoding == "bucketize":
            sizes[f.name] = len(f.boundaries) + 1
    return sizes


def dense_width(name: str) -> int:
    """Width of a dense Transform output (see preprocessing.py)."""
    feature = feature_spec.BY_NAME[name]
    return {"multi_hot": len(feature.vocabulary), "time_of_week": 4}.get(feature.encoding, 1)


class FeatureEncoder(tf.keras.layers.Layer):
    """Concatenates embeddings of categorical features and the dense ones as they are."""

    def __init__(self, names: tuple[str, ...], sizes: dict[str, int], l2: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.names = names
        regularizer = tf.keras.regularizers.L2(l2) if l2 else None
        self.embeddings = {
            n: tf.keras.layers.Embedding(sizes[n], EMBEDDING_DIMS[n], name=f"{n}_embedding",
                                         embeddings_regularizer=regularizer)
            for n in names if n in sizes}

    def call(self, features: dict) -> tf.Tensor:
        parts = []
        for name in self.names:
            x = features[transformed_name(name)]
            if name in self.embeddings:
                parts.append(self.embeddings[name](tf.reshape(x, [-1])))
            else:
                parts.append(tf.reshape(tf.cast(x, tf.float32), [-1, dense_width(name)]))
        return tf.concat(parts, axis=1)


class Tower(tf.keras.Model):
    """Feature encoder followed by a ReLU MLP; the last layer is linear."""

    def __init__(self, names: tuple[str, ...], sizes: dict[str, int],
                 layer_sizes: tuple[int, ...], l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = FeatureEncoder(names, sizes, l2=l2)
        self.dense = tf.keras.Sequential(
            [tf.keras.layers.Dense(n, activation="relu") for n in layer_sizes[:-1]]
            + [tf.keras.layers.Dense(layer_sizes[-1])])

    def call(self, features: dict) -> tf.Tensor:
        return self.dense(self.encoder(features))
