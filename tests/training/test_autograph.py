"""AutoGraph converts our model code but leaves Keras' own alone (TensorFlow's rules name
`keras`, not the `tf_keras` package the models run on)."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
from tensorflow.python.autograph.core import config  # noqa: E402
from tensorflow.python.autograph.impl import conversion  # noqa: E402

from pipelines.training.models import autograph, ranking  # noqa: E402


def test_keras_internals_are_not_converted_and_our_models_are():
    assert tf.keras.layers.Dense.__module__.startswith("tf_keras.")
    autograph.skip_keras()
    autograph.skip_keras()
    assert conversion.is_allowlisted(tf.keras.layers.Dense.call)
    assert conversion.is_allowlisted(tf.keras.Model.train_step)
    assert not conversion.is_allowlisted(ranking.RatingModel.call)
    assert sum(str(rule) == "DoNotConvert rule for tf_keras"
               for rule in config.CONVERSION_RULES) == 1
