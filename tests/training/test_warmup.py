import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from pipelines.training.models import warmup


def test_warm_up_requests_match_the_signature_and_run(tmp_path):
    class Model(tf.Module):
        @tf.function
        def serve(self, k, **raw):
            return {"top": tf.math.top_k(tf.cast(raw["age"], tf.float32), k=k).values,
                    "n": tf.size(raw["user_id"])}

    model = Model()
    # as our exports are: `k` positional, the features as keyword arguments
    signatures = {"serving_default": model.serve.get_concrete_function(
        tf.TensorSpec([], tf.int32, name="k"),
        user_id=tf.TensorSpec([None], tf.string, name="user_id"),
        age=tf.TensorSpec([None], tf.int64, name="age"))}
    path = warmup.write(str(tmp_path), "retrieval", signatures)
    [record] = list(tf.data.TFRecordDataset(path))
    request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
    assert (request.model_spec.name, request.model_spec.signature_name) == (
        "retrieval", "serving_default")
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    assert inputs["user_id"].shape == (warmup.ROWS,) and inputs["k"] == 1
    outputs = signatures["serving_default"](**inputs)  # a request the model accepts
    assert int(outputs["n"]) == warmup.ROWS
