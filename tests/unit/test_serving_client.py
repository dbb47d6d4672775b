import numpy as np
import pytest
import tensorflow as tf
from recsys.tfserving import predict_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2 as tf_predict_pb2

from libs.serving_client import predict_request, to_ndarray, to_tensor_proto

# our declaration of TF Serving's messages -> TensorFlow's own
SAME_AS = {predict_pb2.TensorProto: tensor_pb2.TensorProto,
           predict_pb2.TensorShapeProto: tensor_shape_pb2.TensorShapeProto,
           predict_pb2.TensorShapeProto.Dim: tensor_shape_pb2.TensorShapeProto.Dim,
           predict_pb2.ModelSpec: model_pb2.ModelSpec,
           predict_pb2.PredictRequest: tf_predict_pb2.PredictRequest,
           predict_pb2.PredictResponse: tf_predict_pb2.PredictResponse}


def as_tensorflows(proto):
    return SAME_AS[type(proto)].FromString(proto.SerializeToString())


def from_tensorflows(proto):
    ours = {theirs: ours for ours, theirs in SAME_AS.items()}[type(proto)]
    return ours.FromString(proto.SerializeToString())


@pytest.mark.parametrize("ours", SAME_AS)
def test_every_field_we_declare_is_tensorflows_field_on_the_wire(ours):
    theirs = SAME_AS[ours].DESCRIPTOR.fields_by_name
    for field in ours.DESCRIPTOR.fields:
        assert field.name in theirs, field.name
        other = theirs[field.name]
        assert (field.number, field.type) == (other.number, other.type), field.name
        if field.enum_type:  # every value we name has TensorFlow's number
            values = other.enum_type.values_by_name
            assert all(v.number == values[v.name].number for v in field.enum_type.values)


@pytest.mark.parametrize("values, dtype, tf_dtype", [
    ([1, 2, 3], "int64", tf.int64), ([0.5, 1.5], "float", tf.float32),
    (["a", "é"], "string", tf.string), (7, "int32", tf.int32),
])
def test_packed_tensors_read_back_as_tensorflow_reads_them(values, dtype, tf_dtype):
    proto = to_tensor_proto(values, dtype)
    expected = tf.constant(values if dtype != "string" else [v.encode() for v in values],
                           tf_dtype).numpy()
    np.testing.assert_array_equal(tf.make_ndarray(as_tensorflows(proto)), expected)
    np.testing.assert_array_equal(to_ndarray(proto), expected)


def test_reads_what_tensorflow_writes():
    for value in (np.arange(6, dtype=np.int64).reshape(2, 3),
                  np.array([[b"x", b"y"]], dtype=object), np.float32(2.5),
                  np.array([True, False])):
        np.testing.assert_array_equal(
            to_ndarray(from_tensorflows(tf.make_tensor_proto(value))), value)


def test_a_request_reaches_tf_serving_as_sent():
    request = predict_request("ranking", label="canary")
    request.inputs["user_id"].CopyFrom(to_tensor_proto(["42"], "string"))
    theirs = as_tensorflows(request)
    assert theirs.model_spec.version_label == "canary"
    assert theirs.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(theirs.inputs["user_id"]).tolist() == [b"42"]


def test_a_request_names_a_version_or_a_label():
    assert predict_request("ranking", label="canary").model_spec.version_label == "canary"
    assert predict_request("ranking", 3).model_spec.version.value == 3
    assert not predict_request("ranking").model_spec.HasField("version")
    with pytest.raises(ValueError, match="a version or a version label, not both"):
        predict_request("ranking", 3, "canary")
