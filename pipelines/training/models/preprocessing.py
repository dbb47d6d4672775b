"""TFX Transform: raw features -> model inputs, driven entirely by the feature spec.

The resulting graph is saved inside both exported models, so serving applies exactly
this code to raw request features (no training/serving skew).
"""
from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_transform as tft

from libs import feature_spec
from libs.feature_spec import transformed_name

SECONDS_PER_HOUR = 3600
SECONDS_PER_DAY = 86_400


def _flat(x: tf.Tensor) -> tf.Tensor:
    # SchemaGen(infer_feature_shape=True) makes each raw feature [batch, 1]
    return tf.reshape(x, [-1])


def fixed_vocabulary_index(x: tf.Tensor, vocabulary: tuple) -> tf.Tensor:
    """Index of x in a fixed vocabulary; len(vocabulary) for anything unknown."""
    matches = tf.equal(tf.reshape(x, [-1, 1]), tf.constant(list(vocabulary)))
    index = tf.argmax(tf.cast(matches, tf.int64), axis=1)
    return tf.where(tf.reduce_any(matches, axis=1), index,
                    tf.constant(len(vocabulary), tf.int64))


def multi_hot(x: tf.Tensor, vocabulary: tuple) -> tf.Tensor:
    tokens = tf.strings.split(x, feature_spec.GENRE_SEPARATOR).to_tensor(default_value="")
    matches = tf.equal(tf.expand_dims(tokens, -1), tf.constant(list(vocabulary)))
    return tf.cast(tf.reduce_any(matches, axis=1), tf.float32)


def item_history(x: tf.Tensor, max_length: int, item_vocabulary) -> tf.Tensor:
    """Item ids joined by the spec's separator -> [batch, max_length] indices in the
    item_id vocabulary (unknown ids: its OOV index), the first max_length ids kept,
    padded with -1."""
    tokens = tf.strings.split(x, feature_spec.ITEM_SEPARATOR)[:, :max_length]
    tokens = tokens.to_tensor(default_value="", shape=[None, max_length])
    index = tft.apply_vocabulary(tokens, item_vocabulary, num_oov_buckets=1)
    return tf.where(tf.equal(tokens, ""), tf.constant(-1, tf.int64), index)


def time_of_week(seconds: tf.Tensor) -> tf.Tensor:
    """sin/cos of hour of day and of day of week: [batch, 4] floats."""
    seconds = tf.cast(seconds, tf.float64)
    hour = tf.math.floormod(seconds / SECONDS_PER_HOUR, 24.0) / 24.0
    day = tf.math.floormod(seconds / SECONDS_PER_DAY + 3.0, 7.0) / 7.0  # 1970-01-01: Thu
    angles = 2.0 * math.pi * tf.stack([hour, day], axis=1)
    return tf.cast(tf.concat([tf.sin(angles), tf.cos(angles)], axis=1), tf.float32)


def preprocessing_fn(inputs: dict) -> dict:
    outputs, vocabularies = {}, {}
    for feature in feature_spec.FEATURES:
        if feature.name not in inputs:  # e.g. the label at serving time
            continue
        x = _flat(inputs[feature.name])
        if feature.encoding == "learned_vocabulary":
            vocabularies[feature.name] = tft.vocabulary(x, vocab_filename=feature.name)
            y = tft.apply_vocabulary(x, vocabularies[feature.name], num_oov_buckets=1)
        elif feature.encoding == "item_history":  # shares item_id's vocabulary
            y = item_history(x, feature.max_length, vocabularies["item_id"])
        elif feature.encoding == "fixed_vocabulary":
            y = fixed_vocabulary_index(x, feature.vocabulary)
        elif feature.encoding == "bucketize":
            y = tft.apply_buckets(tf.cast(x, tf.float32), [list(feature.boundaries)])
        elif feature.encoding == "multi_hot":
            y = multi_hot(x, feature.vocabulary)
        elif feature.encoding == "scale":
            lo, hi = feature.boundaries
            y = (tf.cast(x, tf.float32) - lo) / float(hi - lo)
        elif feature.encoding == "time_of_week":
            y = time_of_week(x)
        elif feature.encoding == "label":
            y = tf.cast(x, tf.float32)
        else:
            raise ValueError(f"feature {feature.name}: unknown encoding {feature.encoding!r}")
        outputs[transformed_name(feature.name)] = y
    return outputs
