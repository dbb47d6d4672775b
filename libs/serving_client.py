"""Async client of `tensorflow.serving.PredictionService` (TF Serving's gRPC API).

Speaks TF Serving's wire format through our own declaration of its messages
(libs/protos/recsys/tfserving), so the same code talks to our local model server or to a
real `tensorflow_model_server` without importing TensorFlow. Tensors are packed and
unpacked with numpy directly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
import numpy as np
from recsys.tfserving import predict_pb2

from libs import grpc_server, metrics

# TF Serving's method path: the server knows the call by it, not by our messages' package
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


def predict_method(channel):
    """TF Serving's Predict on a channel (sync or asyncio), with our messages."""
    return channel.unary_unary(
        PREDICT_METHOD, request_serializer=predict_pb2.PredictRequest.SerializeToString,
        response_deserializer=predict_pb2.PredictResponse.FromString)

_NUMPY_OF = {
    predict_pb2.DT_FLOAT: np.float32, predict_pb2.DT_DOUBLE: np.float64,
    predict_pb2.DT_INT32: np.int32, predict_pb2.DT_INT64: np.int64, predict_pb2.DT_BOOL: np.bool_,
}
_VALUE_FIELD = {
    predict_pb2.DT_FLOAT: "float_val", predict_pb2.DT_DOUBLE: "double_val",
    predict_pb2.DT_INT32: "int_val", predict_pb2.DT_INT64: "int64_val",
    predict_pb2.DT_BOOL: "bool_val", predict_pb2.DT_STRING: "string_val",
}


def _shape(dims) -> predict_pb2.TensorShapeProto:
    return predict_pb2.TensorShapeProto(
        dim=[predict_pb2.TensorShapeProto.Dim(size=d) for d in dims])


def to_tensor_proto(values, dtype: str) -> predict_pb2.TensorProto:
    """A list (a [n] tensor) or a scalar of the feature spec's dtypes, or 'int32'."""
    scalar = not isinstance(values, (list, tuple, np.ndarray))
    items = [values] if scalar else list(values)
    dims = [] if scalar else [len(items)]
    if dtype == "string":
        return predict_pb2.TensorProto(
            dtype=predict_pb2.DT_STRING, tensor_shape=_shape(dims),
            string_val=[v if isinstance(v, bytes) else str(v).encode() for v in items])
    kind, np_type = {"int64": (predict_pb2.DT_INT64, np.int64),
                     "int32": (predict_pb2.DT_INT32, np.int32),
                     "float": (predict_pb2.DT_FLOAT, np.float32)}[dtype]
    return predict_pb2.TensorProto(dtype=kind, tensor_shape=_shape(dims),
                                  tensor_content=np.asarray(items, np_type).tobytes())


def to_ndarray(proto: predict_pb2.TensorProto) -> np.ndarray:
    shape = [d.size for d in proto.tensor_shape.dim]
    if proto.dtype == predict_pb2.DT_STRING:
        return np.array(list(proto.string_val), dtype=object).reshape(shape)
    np_type = _NUMPY_OF.get(proto.dtype)
    if np_type is None:
        raise ValueError(f"unsupported output dtype {predict_pb2.DataType.Name(proto.dtype)}")
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=np_type).reshape(shape)
    values = np.asarray(getattr(proto, _VALUE_FIELD[proto.dtype]), dtype=np_type)
    size = int(np.prod(shape)) if shape else 1
    if values.size == 1 and size != 1:  # TF Serving may send one value for a fill
        values = np.full(size, values[0], dtype=np_type)
    return values.reshape(shape)


def predict_request(model: str, version: int = 0, label: str = "",
                    signature: str = "serving_default") -> predict_pb2.PredictRequest:
    if version and label:
        raise ValueError(f"model {model!r}: a request names a version or a version label, "
                         f"not both (got {version} and {label!r})")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version:
        request.model_spec.version.value = version
    elif label:
        request.model_spec.version_label = label
    return request


@dataclass
class Prediction:
    outputs: dict[str, np.ndarray]
    version: int


class ModelClient:
    def __init__(self, target: str, timeout_seconds: float):
        self.target = target
        self.timeout = timeout_seconds
        self._channel = grpc_server.channel(target)
        self._predict = predict_method(self._channel)

    async def predict(self, model: str, inputs: dict[str, predict_pb2.TensorProto],
                      version: int = 0, signature: str = "serving_default",
                      timeout: float | None = None, label: str = "") -> Prediction:
        """`version` (0: the newest) or `label` (a models.config version label), not both;
        the answer says which version answered."""
        request = predict_request(model, version, label, signature)
        for name, tensor in inputs.items():
            request.inputs[name].CopyFrom(tensor)
        start, code = time.perf_counter(), "OK"
        try:
            response = await self._predict(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as err:
            code = err.code().name
            raise
        finally:
            metrics.CLIENT_LATENCY.labels("model_server", f"Predict/{model}", code).observe(
                time.perf_counter() - start)
        return Prediction({k: to_ndarray(v) for k, v in response.outputs.items()},
                          response.model_spec.version.value)

    async def close(self) -> None:
        await self._channel.close()
