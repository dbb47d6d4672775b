"""TFX component after each Pusher: writes the model card (model_card.py).

Reads the Pusher's output (pushed or not, version, destination), the span's snapshot
(training set hash, split, sizes), the evaluation (metrics.json of the model's first
gate; TFMA's slices for the ranking model) and the fairness gate's results. Writes
model_card.md and evaluation.json (libs/version_evaluation.py: the metrics and what they
promise online, for the online quality check) into its own `ModelCard` artifact (recorded
in ML Metadata, so the lineage CLI finds it from the pushed model) and, when the model was
pushed, beside the model in the repository: `<repo>/<name>/<version>/` (model servers
ignore extra files).
"""
# No `from __future__ import annotations`: TFX reads these type hints at definition time.
import json
import os

import tensorflow as tf
from tfx import v1 as tfx

from libs import version_evaluation
from pipelines.training import model_card

InputArtifact = tfx.dsl.components.InputArtifact
OutputArtifact = tfx.dsl.components.OutputArtifact
Parameter = tfx.dsl.components.Parameter
CARD = "model_card.md"


class ModelCard(tfx.dsl.Artifact):
    # <namespace>.<Name>: the form Kubeflow V2 needs for artifact types of our own
    TYPE_NAME = "recsys.ModelCard"


def _json(directory: str, name: str) -> dict:
    path = os.path.join(directory, name)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def tfma_slices(evaluation_uri: str) -> tuple[dict, dict]:
    """(overall metrics, {slice: metrics}) of a TFMA evaluation."""
    import tensorflow_model_analysis as tfma

    overall, slices = {}, {}
    for key, metrics in tfma.load_eval_result(evaluation_uri).slicing_metrics:
        values = {name: value.get("doubleValue") for name, value
                  in metrics.get("", {}).get("", {}).items() if "doubleValue" in value}
        if key:
            slices[", ".join(f"{k} = {v}" for k, v in key)] = values
        else:
            overall = values
    return overall, slices


@tfx.dsl.components.component
def ModelCardWriter(
    pushed_model: InputArtifact[tfx.types.standard_artifacts.PushedModel],
    examples: InputArtifact[tfx.types.standard_artifacts.Examples],
    gate_blessing: InputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    fairness_report: InputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    card: OutputArtifact[ModelCard],
    model_name: Parameter[str],
    examples_dir: Parameter[str],
    evaluation: InputArtifact[tfx.types.standard_artifacts.ModelEvaluation] = None,
) -> None:
    """`gate_blessing`: the blessing whose metrics.json holds the overall metrics;
    `evaluation`: TFMA's, for metrics by slice."""
    pushed = pushed_model.get_int_custom_property("pushed") == 1
    version = pushed_model.get_string_custom_property("pushed_version") or None
    destination = pushed_model.get_string_custom_property("pushed_destination")
    span = examples.get_int_custom_property("span")  # ImportExampleGen records it so
    snapshot = _json(os.path.join(examples_dir, f"span-{span}"), "snapshot.json")
    overall = {k: v for k, v in _json(gate_blessing.uri, "metrics.json").items()
               if k not in ("blessed", "reasons")}
    slices = {}
    if evaluation is not None:
        tfma_overall, slices = tfma_slices(evaluation.uri)
        overall = {**tfma_overall, **overall}
    report = os.path.join(fairness_report.uri, "report.html")
    text = model_card.markdown(model_name, version, destination, pushed, snapshot, overall,
                               slices, _json(fairness_report.uri, "fairness.json"), report)
    evaluation_json = json.dumps(version_evaluation.document(
        model_name, version if pushed else None, snapshot.get("training_set", ""), span,
        overall), indent=2)
    tf.io.gfile.makedirs(card.uri)
    places = [card.uri, destination] if pushed else [card.uri]
    for place in places:
        for name, content in ((CARD, text), (version_evaluation.FILE, evaluation_json)):
            with tf.io.gfile.GFile(os.path.join(place, name), "w") as f:
                f.write(content)
    targets = [os.path.join(place, CARD) for place in places]
    card.set_string_custom_property("model_card", targets[-1])
    # not "pushed": the lineage CLI reads that name as a PushedModel's
    card.set_string_custom_property("model_version", version if pushed else "")
    print(f"ModelCardWriter({model_name}): {targets[-1]}", flush=True)
