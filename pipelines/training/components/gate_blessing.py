"""Blessings of gates that follow another gate.

A gate after an evaluator reads the upstream blessing and writes its own, blessed only if
the upstream one is and its own checks pass; it writes the `blessed` and
`current_model_id` properties the Pusher and the latest-blessed-model resolver read, the
reasons in NOT_BLESSED (as RetrievalEvaluator does) and its metrics in metrics.json.
"""
from __future__ import annotations

import json
import os

import tensorflow as tf


def upstream_reasons(blessing, name: str) -> list[str]:
    """[] when `blessing` is blessed; else why not (its NOT_BLESSED text, if any)."""
    if blessing.get_int_custom_property("blessed") == 1:
        return []
    path = os.path.join(blessing.uri, "NOT_BLESSED")
    text = ""
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            text = f.read().strip()
    # TFMA's Evaluator leaves NOT_BLESSED empty: its thresholds are in the evaluation
    return [f"{name}: {line}" for line in text.splitlines()] or [
        f"{name} did not bless the model (see its evaluation)"]


def write_blessing(blessing, model, reasons: list[str], metrics: dict, gate: str) -> bool:
    blessed = not reasons
    metrics = {**metrics, "blessed": blessed, "reasons": reasons}
    print(f"{gate}: {json.dumps(metrics, default=str)}", flush=True)
    tf.io.gfile.makedirs(blessing.uri)
    with tf.io.gfile.GFile(os.path.join(blessing.uri, "metrics.json"), "w") as f:
        f.write(json.dumps(metrics, indent=2, default=str))
    with tf.io.gfile.GFile(os.path.join(blessing.uri, "BLESSED" if blessed
                                        else "NOT_BLESSED"), "w") as f:
        f.write("\n".join(reasons))
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_int_custom_property("current_model_id", model.id)
    blessing.set_string_custom_property("current_model", model.uri)
    blessing.set_string_custom_property("reasons", "\n".join(reasons))
    return blessed
