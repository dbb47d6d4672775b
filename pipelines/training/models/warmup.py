"""Warm-up requests in each exported SavedModel, where TF Serving looks for them
(`assets.extra/tf_serving_warmup_requests`, PredictionLog records): a server replays them
while loading a version, so its first live calls are not the slow ones (lookup tables
initialised, graphs optimised on first use).

The requests only need the signature's shapes and types: fill values (empty strings,
ones, zeros) in a batch of a few rows.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
ROWS = 8


def fill_values(spec: tf.TensorSpec, rows: int = ROWS) -> np.ndarray:
    shape = [rows if d is None else d for d in spec.shape.as_list()]
    if spec.dtype == tf.string:
        return np.full(shape, b"", dtype=object)
    if spec.dtype.is_integer:  # 1, not 0: a count such as `k` must be positive
        return np.ones(shape, dtype=spec.dtype.as_numpy_dtype)
    return np.zeros(shape, dtype=spec.dtype.as_numpy_dtype)


def input_specs(fn) -> dict[str, tf.TensorSpec]:
    """A signature's inputs by name: named positional specs and keyword arguments."""
    args, kwargs = fn.structured_input_signature
    return {**{spec.name: spec for spec in tf.nest.flatten(args)}, **kwargs}


def write(export_dir: str, model_name: str, signatures: dict,
          names: tuple[str, ...] = ("serving_default",)) -> str:
    """Writes one Predict request per signature in `names`; returns the file's path."""
    from tensorflow_serving.apis import prediction_log_pb2, predict_pb2

    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for name in names:
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = model_name, name
            for key, spec in input_specs(signatures[name]).items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(fill_values(spec),
                                                                  dtype=spec.dtype))
            writer.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            ).SerializeToString())
    return path
