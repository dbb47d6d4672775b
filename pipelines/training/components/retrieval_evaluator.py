"""TFX component that gates the retrieval model on top-k accuracy.

TFMA's Evaluator suits pointwise models (the ranking model uses it); a retrieval model is
judged on whether the item a user rated next appears in the model's top k over the whole
catalog. This component computes that on the eval split for the candidate model, the
last blessed retrieval model and a most-popular baseline. It blesses the candidate only
if it reaches `min_accuracy` and `min_ratio_to_popularity` times the baseline's accuracy,
and is not worse than the last blessed model by more than `tolerance`. It writes the
`blessed` / `current_model_id` properties the Evaluator writes, so the Pusher and the
latest-blessed-model resolver work with it unchanged.
"""
# No `from __future__ import annotations`: TFX reads these type hints at definition time.
import collections
import json
import os

import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils

from libs import feature_spec
from pipelines.training.models.retrieval import QUERY_FEATURES
from pipelines.training.models.inputs import DTYPES, raw_tensors

InputArtifact = tfx.dsl.components.InputArtifact
OutputArtifact = tfx.dsl.components.OutputArtifact
Parameter = tfx.dsl.components.Parameter
BATCH = 2048


def _read_split(examples, split: str, names: tuple[str, ...]) -> dict[str, list]:
    uri = artifact_utils.get_split_uri([examples], split)
    files = tf.io.gfile.glob(os.path.join(uri, "*"))
    spec = {n: tf.io.FixedLenFeature([], DTYPES[feature_spec.BY_NAME[n].dtype])
            for n in names}
    columns = collections.defaultdict(list)
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(BATCH):
        for name, values in tf.io.parse_example(batch, spec).items():
            columns[name].extend(values.numpy().tolist())
    return columns


def top_k_accuracy(model_dir: str, columns: dict, k: int) -> float:
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    hits, total = 0, len(columns["item_id"])
    for lo in range(0, total, BATCH):
        inputs = raw_tensors({n: columns[n][lo:lo + BATCH] for n in QUERY_FEATURES})
        top = serve(k=tf.constant(k), **inputs)["item_ids"].numpy()
        truth = columns["item_id"][lo:lo + BATCH]
        hits += sum(t in row for t, row in zip(truth, top))
    return hits / max(total, 1)


def popularity_accuracy(train_items: list[bytes], eval_items: list[bytes], k: int) -> float:
    popular = {item for item, _ in collections.Counter(train_items).most_common(k)}
    return sum(item in popular for item in eval_items) / max(len(eval_items), 1)


@tfx.dsl.components.component
def RetrievalEvaluator(
    examples: InputArtifact[tfx.types.standard_artifacts.Examples],
    model: InputArtifact[tfx.types.standard_artifacts.Model],
    blessing: OutputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    baseline_model: InputArtifact[tfx.types.standard_artifacts.Model] = None,
    k: Parameter[int] = 100,
    min_accuracy: Parameter[float] = 0.0,
    min_ratio_to_popularity: Parameter[float] = 0.0,
    tolerance: Parameter[float] = 0.01,
) -> None:
    eval_columns = _read_split(examples, "eval", QUERY_FEATURES + ("item_id",))
    train_items = _read_split(examples, "train", ("item_id",))["item_id"]
    metrics = {
        "k": k,
        "eval_examples": len(eval_columns["item_id"]),
        "top_k_accuracy": top_k_accuracy(os.path.join(model.uri, "Format-Serving"),
                                         eval_columns, k),
        "popularity_top_k_accuracy": popularity_accuracy(train_items,
                                                         eval_columns["item_id"], k),
    }
    reasons = []
    if metrics["top_k_accuracy"] < min_accuracy:
        reasons.append(f"top-{k} accuracy {metrics['top_k_accuracy']:.4f} is below the "
                       f"minimum {min_accuracy:.4f}")
    floor = min_ratio_to_popularity * metrics["popularity_top_k_accuracy"]
    if metrics["top_k_accuracy"] < floor:
        reasons.append(f"top-{k} accuracy {metrics['top_k_accuracy']:.4f} is below "
                       f"{min_ratio_to_popularity} x the most-popular baseline's "
                       f"{metrics['popularity_top_k_accuracy']:.4f}")
    if baseline_model is not None:
        metrics["baseline_top_k_accuracy"] = top_k_accuracy(
            os.path.join(baseline_model.uri, "Format-Serving"), eval_columns, k)
        if metrics["top_k_accuracy"] < metrics["baseline_top_k_accuracy"] - tolerance:
            reasons.append(f"top-{k} accuracy {metrics['top_k_accuracy']:.4f} is worse than "
                           f"the last blessed model's {metrics['baseline_top_k_accuracy']:.4f}"
                           f" by more than {tolerance}")
        blessing.set_int_custom_property("baseline_model_id", baseline_model.id)
    blessed = not reasons
    metrics["blessed"], metrics["reasons"] = blessed, reasons
    print(f"RetrievalEvaluator: {json.dumps(metrics)}", flush=True)

    tf.io.gfile.makedirs(blessing.uri)
    with tf.io.gfile.GFile(os.path.join(blessing.uri, "metrics.json"), "w") as f:
        f.write(json.dumps(metrics, indent=2))
    with tf.io.gfile.GFile(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"),
                           "w") as f:
        f.write("\n".join(reasons))
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_int_custom_property("current_model_id", model.id)
    blessing.set_string_custom_property("current_model", model.uri)
    blessing.set_float_custom_property("top_k_accuracy", metrics["top_k_accuracy"])
