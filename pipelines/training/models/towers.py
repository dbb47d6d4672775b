"""Small Keras building blocks over Transform outputs: feature encoders and towers."""
from __future__ import annotations

import tensorflow as tf

from libs import feature_spec
from libs.feature_spec import transformed_name

EMBEDDING_DIMS = {"user_id": 32, "item_id": 32, "age": 4, "gender": 2, "occupation": 8,
                  "rated_items": 32}
ID_FEATURES = ("user_id", "item_id", "rated_items")


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
    for f in feature_spec.FEATURES:  # histories index the item vocabulary
        if f.encoding == "item_history":
            sizes[f.name] = sizes["item_id"]
    return sizes


def dense_width(name: str) -> int:
    """Width of a dense Transform output (see preprocessing.py)."""
    feature = feature_spec.BY_NAME[name]
    return {"multi_hot": len(feature.vocabulary), "time_of_week": 4}.get(feature.encoding, 1)


class HistoryEmbedding(tf.keras.layers.Layer):
    """Mean of the embeddings of a history's items; padding (-1) is masked out, an empty
    history embeds to zeros. In training each item is dropped with probability `dropout`
    (denoising, as in Mult-DAE): the model must predict items from part of a history."""

    def __init__(self, size: int, dim: int, embeddings_regularizer=None,
                 dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.dropout = dropout
        self.embedding = tf.keras.layers.Embedding(size, dim,
                                                   embeddings_regularizer=embeddings_regularizer)

    def call(self, indices: tf.Tensor, training: bool = False) -> tf.Tensor:
        mask = tf.cast(indices >= 0, tf.float32)[..., None]
        if training and self.dropout:
            mask *= tf.cast(tf.random.uniform(tf.shape(mask)) >= self.dropout, tf.float32)
        vectors = self.embedding(tf.maximum(indices, 0)) * mask
        return tf.reduce_sum(vectors, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


class FeatureEncoder(tf.keras.layers.Layer):
    """Concatenates embeddings of categorical features and the dense ones as they are."""

    def __init__(self, names: tuple[str, ...], sizes: dict[str, int], l2: float = 0.0,
                 history_dropout: float = 0.0, id_dim: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.names = names
        regularizer = tf.keras.regularizers.L2(l2) if l2 else None
        # id_dim: width of the id and history embeddings, if not EMBEDDING_DIMS'
        dims = {**EMBEDDING_DIMS, **({n: id_dim for n in ID_FEATURES} if id_dim else {})}
        self.embeddings = {}
        for n in names:
            if feature_spec.BY_NAME[n].encoding == "item_history":
                self.embeddings[n] = HistoryEmbedding(
                    sizes[n], dims[n], name=f"{n}_embedding",
                    embeddings_regularizer=regularizer, dropout=history_dropout)
            elif n in sizes:
                self.embeddings[n] = tf.keras.layers.Embedding(
                    sizes[n], dims[n], name=f"{n}_embedding",
                    embeddings_regularizer=regularizer)

    def call(self, features: dict, training: bool = False) -> tf.Tensor:
        parts = []
        for name in self.names:
            x = features[transformed_name(name)]
            if isinstance(self.embeddings.get(name), HistoryEmbedding):
                parts.append(self.embeddings[name](x, training=training))
            elif name in self.embeddings:
                parts.append(self.embeddings[name](tf.reshape(x, [-1])))
            else:
                parts.append(tf.reshape(tf.cast(x, tf.float32), [-1, dense_width(name)]))
        return tf.concat(parts, axis=1)


class Tower(tf.keras.Model):
    """Feature encoder followed by a ReLU MLP; the last layer is linear."""

    def __init__(self, names: tuple[str, ...], sizes: dict[str, int],
                 layer_sizes: tuple[int, ...], l2: float = 0.0, history_dropout: float = 0.0,
                 id_dim: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = FeatureEncoder(names, sizes, l2=l2, history_dropout=history_dropout,
                                      id_dim=id_dim)
        self.dense = tf.keras.Sequential(
            [tf.keras.layers.Dense(n, activation="relu") for n in layer_sizes[:-1]]
            + [tf.keras.layers.Dense(layer_sizes[-1])])

    def call(self, features: dict, training: bool = False) -> tf.Tensor:
        return self.dense(self.encoder(features, training=training))
