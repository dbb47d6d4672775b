"""TF Serving's Predict, GetModelMetadata and GetModelStatus as plain functions.

Errors carry the gRPC status TF Serving would answer: NOT_FOUND for an unknown model or
version, INVALID_ARGUMENT for an unknown version label or malformed inputs,
FAILED_PRECONDITION for an unknown signature, and for a label models.config assigns to a
version that has not loaded yet (TF Serving refuses such a config with that code).
"""
from __future__ import annotations

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_pb2, predict_pb2)

from services.model_server.repository import (LabelNotReady, LoadedVersion, ModelRepository,
                                              NotFound, UnknownLabel)

DEFAULT_SIGNATURE = "serving_default"


class ServingError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _resolve(repo: ModelRepository, spec: model_pb2.ModelSpec) -> LoadedVersion:
    if not spec.name:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec name")
    try:
        return repo.get(spec.name, spec.version.value if spec.HasField("version") else 0,
                        spec.version_label)
    except NotFound as err:
        raise ServingError(grpc.StatusCode.NOT_FOUND, str(err)) from None
    except UnknownLabel as err:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
    except LabelNotReady as err:
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, str(err)) from None


def _to_array(name: str, proto, spec: meta_graph_pb2.TensorInfo) -> np.ndarray:
    if proto.dtype != spec.dtype:
        expected = tf.dtypes.as_dtype(spec.dtype).name
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Expects arg[{name}] to be {expected} but "
                           f"{tf.dtypes.as_dtype(proto.dtype).name} is provided"
                           if proto.dtype else f"input {name!r} has no dtype")
    try:
        value = tf.make_ndarray(proto)
    except (TypeError, ValueError) as err:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {name!r} is not a valid tensor: {err}") from None
    shape = tf.TensorShape(spec.tensor_shape)
    if not shape.is_compatible_with(value.shape):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {name!r} has shape {list(value.shape)}, the signature "
                           f"expects {shape}")
    return value


def predict(repo: ModelRepository, request: predict_pb2.PredictRequest
            ) -> predict_pb2.PredictResponse:
    return predict_on(_resolve(repo, request.model_spec), request)


def predict_on(loaded: LoadedVersion, request: predict_pb2.PredictRequest
               ) -> predict_pb2.PredictResponse:
    """Predict on one loaded version (the request's model spec already resolved)."""
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    fn = loaded.signature(signature_name)
    if fn is None:
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                           f'Serving signature key "{signature_name}" not found.')
    specs = fn.inputs
    sent, expected = set(request.inputs), set(specs)
    if sent != expected:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(expected)} for inputs "
            f"of signature {signature_name}. Sent extra: {sorted(sent - expected)}. "
            f"Missing but required: {sorted(expected - sent)}.")
    inputs = {k: _to_array(k, request.inputs[k], specs[k]) for k in specs}
    wanted = set(request.output_filter)
    unknown = wanted - set(fn.outputs)
    if unknown:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"output tensor alias not found in signature: {sorted(unknown)}")
    try:
        outputs = fn(**inputs)
    except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as err:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, err.message) from None

    response = predict_pb2.PredictResponse()
    response.model_spec.name = loaded.name
    response.model_spec.version.value = loaded.version
    response.model_spec.signature_name = signature_name
    for key, value in outputs.items():
        if not wanted or key in wanted:
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return response


def model_metadata(repo: ModelRepository, request: get_model_metadata_pb2.GetModelMetadataRequest
                   ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    fields = list(request.metadata_field)
    if fields != ["signature_def"]:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Metadata field(s) {fields} not supported; "
                           "only ['signature_def'] is")
    loaded = _resolve(repo, request.model_spec)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in loaded.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = loaded.name
    response.model_spec.version.value = loaded.version
    response.metadata["signature_def"].Pack(signature_map)
    return response


def model_status(repo: ModelRepository, request: get_model_status_pb2.GetModelStatusRequest
                 ) -> get_model_status_pb2.GetModelStatusResponse:
    try:
        states = repo.status(request.model_spec.name)
    except NotFound as err:
        raise ServingError(grpc.StatusCode.NOT_FOUND, str(err)) from None
    if request.model_spec.HasField("version"):
        version = request.model_spec.version.value
        if version not in states:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find version {version} of model "
                               f"{request.model_spec.name}")
        states = {version: states[version]}
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, state in sorted(states.items()):
        status = response.model_version_status.add()
        status.version = version
        if state == "AVAILABLE":
            status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        else:
            status.state = get_model_status_pb2.ModelVersionStatus.END
            status.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
            status.status.error_message = state
    return response


WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"  # where TF Serving reads them


def warm_up(loaded: LoadedVersion) -> int:
    """Replays the version's warm-up requests (PredictionLog records, as TF Serving does)
    before it serves; returns how many. A request that fails fails the load."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = loaded.path / WARMUP_FILE
    if not path.exists():
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(str(path)):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if entry.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"{path}: only Predict warm-up requests are supported, got "
                             f"{entry.WhichOneof('log_type')}")
        try:
            predict_on(loaded, entry.predict_log.request)
        except ServingError as err:
            raise ValueError(f"{path}: warm-up request {count + 1} failed: "
                             f"{err.message}") from None
        count += 1
    return count
