import numpy as np
import pytest
import tensorflow as tf

from libs.serving_client import predict_request, to_ndarray, to_tensor_proto


@pytest.mark.parametrize("values, dtype, tf_dtype", [
    ([1, 2, 3], "int64", tf.int64), ([0.5, 1.5], "float", tf.float32),
    (["a", "é"], "string", tf.string), (7, "int32", tf.int32),
])
def test_packed_tensors_read_back_as_tensorflow_reads_them(values, dtype, tf_dtype):
    proto = to_tensor_proto(values, dtype)
    expected = tf.constant(values if dtype != "string" else [v.encode() for v in values],
                           tf_dtype).numpy()
    np.testing.assert_array_equal(tf.make_ndarray(proto), expected)
    np.testing.assert_array_equal(to_ndarray(proto), expected)


def test_reads_what_tensorflow_writes():
    for value in (np.arange(6, dtype=np.int64).reshape(2, 3),
                  np.array([[b"x", b"y"]], dtype=object), np.float32(2.5)):
        np.testing.assert_array_equal(to_ndarray(tf.make_tensor_proto(value)), value)


def test_a_request_names_a_version_or_a_label():
    assert predict_request("ranking", label="canary").model_spec.version_label == "canary"
    assert predict_request("ranking", 3).model_spec.version.value == 3
    assert not predict_request("ranking").model_spec.HasField("version")
    with pytest.raises(ValueError, match="a version or a version label, not both"):
        predict_request("ranking", 3, "canary")
