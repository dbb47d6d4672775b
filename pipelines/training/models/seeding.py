"""One seed per run: the pipeline config's `seed`, in the Trainers' and Tuners'
custom_config, for everything random in training a model (weight initialisation, input
shuffles, dropout, the sources' blend, the candidate index, the tuner's trials). With the
same data, config and seed a run gives the same models and metrics on this machine."""
from __future__ import annotations

import tensorflow as tf

DEFAULT = 42


def seed_of(fn_args) -> int:
    return int((fn_args.custom_config or {}).get("seed", DEFAULT))


def seed_everything(fn_args) -> int:
    """Seeds Python, NumPy and TensorFlow; returns the seed."""
    seed = seed_of(fn_args)
    tf.keras.utils.set_random_seed(seed)
    return seed
