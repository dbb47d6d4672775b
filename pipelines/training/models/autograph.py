"""AutoGraph leaves Keras alone. TensorFlow's conversion rules skip `keras` but not
`tf_keras` (the Keras 2 package TensorFlow Recommenders needs), so a model's first fit
converted Keras' own code too: 34 s of a one-layer model's 35 s first epoch on this
machine, 0.8 s without it. Our model code is still converted."""
from tensorflow.python.autograph.core import config

KERAS = "tf_keras"


def skip_keras() -> None:
    """Idempotent; call before the first model is traced."""
    if not any(isinstance(rule, config.DoNotConvert) and rule.matches(KERAS)
               for rule in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (config.DoNotConvert(KERAS), *config.CONVERSION_RULES)
