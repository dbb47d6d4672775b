"""Training loop shared by the Trainers: Keras fit in a few chunks, so the run records a
learning curve (train and validation loss after each chunk) next to the model.
Under several workers every one fits; only the chief writes the curve."""
from __future__ import annotations

import json
import os

import tensorflow as tf

from pipelines.training.models import distribution

CURVE_POINTS = 10
HISTORY_FILE = "history.json"


def fit(model: tf.keras.Model, train, evaluation, fn_args) -> dict:
    points = max(1, min(CURVE_POINTS, fn_args.train_steps))
    history = model.fit(train, steps_per_epoch=fn_args.train_steps // points, epochs=points,
                        validation_data=evaluation.take(fn_args.eval_steps), verbose=2)
    curve = {"steps": [(i + 1) * (fn_args.train_steps // points) for i in range(points)],
             **{name: [float(v) for v in values]
                for name, values in history.history.items()}}
    if not distribution.is_chief():
        return curve
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, HISTORY_FILE), "w") as f:
        f.write(json.dumps(curve))
    return curve
