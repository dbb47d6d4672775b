"""The model server's functions against real SavedModels in a TF Serving layout."""
from __future__ import annotations

import os
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     predict_pb2)

from libs.model_config import ModelConfigFile
from libs.serving_client import to_ndarray, to_tensor_proto
from services.model_server import prediction
from services.model_server.config import ModelServerConfig, model_sources
from services.model_server.repository import ModelRepository, ModelSource

X, TAG = np.array([1.0], np.float32), np.array([b"a"], object)  # one row of the signature


def save_version(base, version: int, factor: float) -> None:
    class Scale(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x"),
                                      tf.TensorSpec([None], tf.string, name="tag")])
        def serve(self, x, tag):
            return {"y": x * factor, "tag": tag}

    module = Scale()
    path = base / str(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    old = time.time() - 60  # as if the copy finished a minute ago
    for root, _, files in os.walk(path):
        for name in files:
            os.utime(os.path.join(root, name), (old, old))


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("repo")
    save_version(base / "scale", 1, 2.0)
    save_version(base / "scale", 2, 3.0)
    return base


@pytest.fixture
def repo(repo_dir):
    repository = ModelRepository([ModelSource("scale", repo_dir / "scale", policy="all",
                                              labels={"stable": 1})])
    repository.poll()
    return repository


def request(version=0, label="", signature="", **inputs):
    r = predict_pb2.PredictRequest()
    r.model_spec.name = "scale"
    if version:
        r.model_spec.version.value = version
    if label:  # version and version_label are a oneof
        r.model_spec.version_label = label
    r.model_spec.signature_name = signature
    inputs = inputs or {"x": to_tensor_proto([1.0, 2.0], "float"),
                        "tag": to_tensor_proto(["a", "b"], "string")}
    for k, v in inputs.items():  # our client's tensors, as TF Serving reads them
        r.inputs[k].ParseFromString(v.SerializeToString())
    return r


def code_of(fn, *args):
    with pytest.raises(prediction.ServingError) as err:
        fn(*args)
    return err.value.code, err.value.message


def test_newest_version_answers_by_default(repo):
    response = prediction.predict(repo, request())
    assert response.model_spec.version.value == 2
    np.testing.assert_allclose(to_ndarray(response.outputs["y"]), [3.0, 6.0])
    assert list(to_ndarray(response.outputs["tag"])) == [b"a", b"b"]


def test_version_and_label_select_a_version(repo):
    assert prediction.predict(repo, request(version=1)).model_spec.version.value == 1
    assert prediction.predict(repo, request(label="stable")).model_spec.version.value == 1


def test_latest_policy_serves_only_the_newest_by_default(repo_dir):
    repository = ModelRepository([ModelSource("scale", repo_dir / "scale")])
    repository.poll()
    assert code_of(prediction.predict, repository, request(version=1))[0] == \
        grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("bad, code, words", [
    (request(version=9), grpc.StatusCode.NOT_FOUND, "Specific(scale, 9)"),
    # TF Serving's code and words for a label the config does not assign
    (request(label="canary"), grpc.StatusCode.INVALID_ARGUMENT,
     "Unrecognized servable version label: canary"),
    (request(signature="nope"), grpc.StatusCode.FAILED_PRECONDITION, '"nope" not found'),
    (request(x=to_tensor_proto([1.0], "float")), grpc.StatusCode.INVALID_ARGUMENT,
     "Missing but required: ['tag']"),
    (request(x=to_tensor_proto([1], "int64"), tag=to_tensor_proto(["a"], "string")),
     grpc.StatusCode.INVALID_ARGUMENT, "Expects arg[x] to be float32 but int64 is provided"),
    (request(x=to_tensor_proto(1.0, "float"), tag=to_tensor_proto(["a"], "string")),
     grpc.StatusCode.INVALID_ARGUMENT, "input 'x' has shape []"),
])
def test_bad_requests_get_tf_serving_status_codes(repo, bad, code, words):
    got_code, message = code_of(prediction.predict, repo, bad)
    assert got_code == code and words in message


def test_unknown_model_is_not_found(repo):
    r = request()
    r.model_spec.name = "missing"
    assert code_of(prediction.predict, repo, r) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(missing)")


def test_output_filter(repo):
    r = request()
    r.output_filter.append("y")
    assert set(prediction.predict(repo, r).outputs) == {"y"}


def test_metadata_lists_signatures(repo):
    r = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    r.model_spec.name = "scale"
    response = prediction.model_metadata(repo, r)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def["serving_default"].inputs) == {"x", "tag"}


def test_new_version_is_swapped_in_and_held_versions_keep_working(repo, repo_dir, tmp_path):
    base = tmp_path / "scale"
    save_version(base, 1, 2.0)
    repository = ModelRepository([ModelSource("scale", base)])
    repository.poll()
    held = repository.get("scale")  # a request in flight holds version 1
    save_version(base, 2, 5.0)
    repository.poll()
    assert repository.get("scale").version == 2
    assert held.signature("serving_default")(x=X, tag=TAG)["y"][0] == 2.0


def test_version_still_being_copied_is_not_loaded(tmp_path):
    base = tmp_path / "scale"
    save_version(base, 1, 2.0)
    save_version(base, 2, 3.0)
    os.utime(base / "2" / "saved_model.pb")  # just written
    repository = ModelRepository([ModelSource("scale", base)], settle_seconds=30)
    repository.poll()
    assert repository.get("scale").version == 1


def test_corrupt_version_is_reported_and_the_previous_one_serves(tmp_path):
    base = tmp_path / "scale"
    save_version(base, 1, 2.0)
    save_version(base, 2, 3.0)
    (base / "2" / "saved_model.pb").write_bytes(b"not a saved model")
    os.utime(base / "2" / "saved_model.pb", (1, 1))
    repository = ModelRepository([ModelSource("scale", base, policy="all")])
    repository.poll()
    assert repository.get("scale").version == 1
    r = get_model_status_pb2.GetModelStatusRequest()
    r.model_spec.name = "scale"
    states = {s.version: s.state for s in prediction.model_status(repository, r)
              .model_version_status}
    assert states == {1: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
                      2: get_model_status_pb2.ModelVersionStatus.END}


def test_tf_serving_models_config_is_read(tmp_path, repo_dir):
    config_file = tmp_path / "models.config"
    config_file.write_text(f"""
model_config_list {{
  config {{
    name: "scale"
    base_path: "{repo_dir / 'scale'}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
}}""")
    (source,) = model_sources(ModelServerConfig(model_config_file=str(config_file)))
    assert source.policy == "specific" and source.versions == (1, 2)
    assert source.labels == {"stable": 1, "canary": 2}


def test_ready_only_when_every_model_has_a_version(tmp_path):
    save_version(tmp_path / "scale", 1, 2.0)
    repository = ModelRepository([ModelSource("scale", tmp_path / "scale"),
                                  ModelSource("other", tmp_path / "other")])
    repository.poll()
    assert not repository.ready()
    save_version(tmp_path / "other", 1, 1.0)
    repository.poll()
    assert repository.ready()


def with_warmup(base, version: int, factor: float, inputs: dict) -> None:
    """A version carrying TF Serving warm-up requests (as the training export writes)."""
    from tensorflow_serving.apis import prediction_log_pb2

    save_version(base, version, factor)
    path = base / str(version) / prediction.WARMUP_FILE
    path.parent.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(
            request=request(**inputs))).SerializeToString())
    old = time.time() - 60  # copied a minute ago, like the rest of the version
    os.utime(path, (old, old))


def test_warm_up_requests_are_replayed_before_a_version_serves(tmp_path, caplog):
    caplog.set_level("INFO")
    base = tmp_path / "scale"
    with_warmup(base, 1, 2.0, {})
    repository = ModelRepository([ModelSource("scale", base)], warm_up=prediction.warm_up)
    repository.poll()
    assert repository.get("scale").version == 1
    [loaded] = [r for r in caplog.records if r.getMessage() == "loaded model"]
    assert loaded.fields["warmup_requests"] == 1


def test_a_failing_warm_up_request_fails_the_load_as_in_tf_serving(tmp_path):
    base = tmp_path / "scale"
    with_warmup(base, 1, 2.0, {"x": to_tensor_proto([1.0], "float")})  # "tag" missing
    repository = ModelRepository([ModelSource("scale", base)], warm_up=prediction.warm_up)
    repository.poll()
    assert not repository.ready()
    status = repository.status("scale")[1]
    assert "warm-up request 1 failed" in status and "Missing but required" in status


def models_config(path, base, versions=(1,), **labels) -> None:
    """A models.config naming one model, its specific versions and labels."""
    path.write_text(f"""model_config_list {{ config {{
  name: "scale" base_path: "{base}" model_platform: "tensorflow"
  model_version_policy {{ specific {{ {" ".join(f"versions: {v}" for v in versions)} }} }}
  {" ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())}
}} }}""")


def test_a_changed_models_config_is_read_and_an_invalid_one_keeps_the_running_one(
        tmp_path, repo_dir, caplog):
    path = tmp_path / "models.config"
    models_config(path, repo_dir / "scale", (1,), stable=1)
    watched = ModelConfigFile(path)
    assert watched.changed() is None  # nothing new
    models_config(path, repo_dir / "scale", (1, 2), stable=1, canary=2)
    (source,) = watched.changed()
    assert source.versions == (1, 2) and source.labels == {"stable": 1, "canary": 2}
    path.write_text("model_config_list { config { name: ")  # half written, or wrong
    assert watched.changed() is None and watched.sources == [source]
    rejected = [r for r in caplog.records if r.getMessage().startswith("model config rejected")]
    assert len(rejected) == 1 and "not a valid TF Serving model config" in \
        rejected[0].fields["error"]
    assert watched.changed() is None  # the same bad text is not reported again
    assert len([r for r in caplog.records if r.getMessage().startswith("model config rej")]) == 1


def labelled(repo, label):
    return prediction.predict(repo, request(label=label)).model_spec.version.value


def test_labels_move_when_their_version_has_loaded_and_never_name_an_unloaded_one(
        tmp_path, caplog):
    base = tmp_path / "scale"
    save_version(base, 1, 2.0)
    repository = ModelRepository([ModelSource("scale", base, "specific", versions=(1,),
                                               labels={"stable": 1})])
    repository.poll()
    assert repository.ready() and labelled(repository, "stable") == 1
    # the operator's canary: version 2 added and labelled in one change, while its files
    # are still being copied
    save_version(base, 2, 3.0)
    os.utime(base / "2" / "saved_model.pb")
    repository.settle_seconds = 30
    repository.reconfigure([ModelSource("scale", base, "specific", versions=(1, 2),
                                        labels={"stable": 1, "canary": 2})])
    repository.poll()
    assert labelled(repository, "stable") == 1
    code, message = code_of(prediction.predict, repository, request(label="canary"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert message == ("version label 'canary' of model 'scale' is assigned to version 2, "
                       "which is not currently available for inference")
    [waiting] = [r for r in caplog.records if r.getMessage().startswith("version labels wait")]
    assert "Request to assign label 'canary' to version 2 of model scale" in \
        waiting.fields["reasons"][0] and "not complete in base_path" in waiting.fields["reasons"][0]
    repository.settle_seconds = 0  # the copy finished
    repository.poll()
    assert (labelled(repository, "stable"), labelled(repository, "canary")) == (1, 2)
    # promotion: stable moves to 2, 1 leaves; a request holding 1 finishes on it
    held = repository.get("scale", label="stable")
    repository.reconfigure([ModelSource("scale", base, "specific", versions=(2,),
                                        labels={"stable": 2, "canary": 2})])
    repository.poll()
    assert labelled(repository, "stable") == 2 and set(repository.status("scale")) == {2}
    assert held.signature("serving_default")(x=X, tag=TAG)["y"][0] == 2.0


def test_a_label_on_a_version_the_policy_does_not_load_waits_and_the_old_labels_stay(
        tmp_path, repo_dir, caplog):
    repository = ModelRepository([ModelSource("scale", repo_dir / "scale", "specific",
                                              versions=(1, 2), labels={"canary": 2})])
    repository.poll()
    # a rollback that forgot the label: the policy drops 2, the label still names it
    repository.reconfigure([ModelSource("scale", repo_dir / "scale", "specific",
                                        versions=(1,), labels={"stable": 1, "canary": 2})])
    repository.poll()
    assert labelled(repository, "canary") == 2  # the label in force keeps 2 loaded
    assert code_of(prediction.predict, repository, request(label="stable"))[0] == \
        grpc.StatusCode.FAILED_PRECONDITION
    [waiting] = [r for r in caplog.records if r.getMessage().startswith("version labels wait")]
    assert "its version policy does not load it" in waiting.fields["reasons"][0]
    # the rollback done right: canary removed; 2 unloads with it, in the same swap
    repository.reconfigure([ModelSource("scale", repo_dir / "scale", "specific",
                                        versions=(1,), labels={"stable": 1})])
    repository.poll()
    assert labelled(repository, "stable") == 1 and set(repository.status("scale")) == {1}
    assert code_of(prediction.predict, repository, request(label="canary"))[0] == \
        grpc.StatusCode.INVALID_ARGUMENT


def test_not_ready_until_the_configs_labels_are_in_force(tmp_path, repo_dir):
    repository = ModelRepository([ModelSource("scale", repo_dir / "scale", "specific",
                                              versions=(1,), labels={"stable": 2})])
    repository.poll()
    assert repository.get("scale").version == 1 and not repository.ready()


@pytest.mark.parametrize("field, value, words", [
    ("inter_op_threads", -2, "field 'inter_op_threads' must be -1 (the caller's thread)"),
    ("intra_op_threads", -1, "field 'intra_op_threads' must be 0 (one per core) or more"),
])
def test_thread_pool_sizes_are_validated(field, value, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ModelServerConfig(**{field: value}).validate()
