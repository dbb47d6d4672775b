"""The hyperparameters a model trains with, in one place for every run_fn and the Tuner.

Precedence, lowest first: the model's DEFAULTS, the tuned values (`fn_args.hyperparameters`:
the Tuner's best, from this run or resolved from ML Metadata), the explicit values in the
pipeline config (`hyperparameters.<model>`, passed as `custom_config[<model>]`).
KerasTuner only holds numbers, strings and booleans, so list-valued hyperparameters
(layer widths) travel as JSON strings; `decode` turns them back.
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

from pipelines.training.models import distribution

RECORD_FILE = "hyperparameters.json"


def encode(value):
    """A config value as KerasTuner can hold it."""
    return json.dumps(value) if isinstance(value, (list, tuple)) else value


def decode(defaults: dict, values: dict) -> dict:
    """KerasTuner values -> the types DEFAULTS has. Names the model does not know (a
    search recorded before the model changed) are dropped, with a warning."""
    out = {}
    for name, value in values.items():
        if name not in defaults:
            print(f"warning: ignoring tuned hyperparameter {name!r}: the model has no such "
                  "hyperparameter", flush=True)
            continue
        if isinstance(defaults[name], list) and isinstance(value, str):
            value = json.loads(value)
        out[name] = value
    return out


def tuned_values(fn_args) -> dict:
    """The values in a KerasTuner HyperParameters config (what the Trainer reads from a
    HyperParameters artifact), or {} when there is none."""
    return dict((getattr(fn_args, "hyperparameters", None) or {}).get("values", {}))


def explicit_values(fn_args, model: str) -> dict:
    return dict((fn_args.custom_config or {}).get(model) or {})


def for_training(defaults: dict, fn_args, model: str) -> dict:
    """The merged hyperparameters of a Trainer run, recorded as RECORD_FILE in its model
    run directory (the lineage and the run summary read it)."""
    tuned = decode(defaults, tuned_values(fn_args))
    explicit = explicit_values(fn_args, model)
    merged = {**defaults, **tuned, **explicit}
    if not distribution.is_chief():
        return merged
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, RECORD_FILE), "w") as f:
        f.write(json.dumps({"values": merged, "tuned": tuned, "explicit": explicit},
                           indent=2))
    return merged
