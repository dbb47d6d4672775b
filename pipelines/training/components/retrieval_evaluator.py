"""TFX component that gates the retrieval model on top-k accuracy and Recall@10.

TFMA's Evaluator suits pointwise models (the ranking model uses it); a retrieval model is
judged on whether the items a user rated appear in the model's top k over the whole
catalog. This component computes, on the eval split (definitions in evaluation.py):
top-k accuracy (seen items kept) and Recall@10 / NDCG@10 (per user, items rated in train
removed), for the candidate model, the last blessed retrieval model and a most-popular
baseline. It blesses the candidate only if its top-k accuracy reaches `min_accuracy` and
`min_ratio_to_popularity` times the baseline's, its Recall@10 reaches
`min_recall_ratio_to_popularity` times the baseline's, and neither is worse than the
last blessed model's by more than `tolerance`. When the version carries candidate
sources, the order the candidate service will serve (their blend) is judged too, on the
lists of the training data's last days, by a blend the Trainer trained on what came
before them (time-ordered, as the replay): its NDCG@10 must reach
`sources_min_ratio_to_popularity` times the most-popular order's and the last blessed
version's blend's (scored on the same lists) minus `sources_tolerance`. It writes the `blessed` /
`current_model_id` properties the Evaluator writes, so the Pusher and the
latest-blessed-model resolver work with it unchanged.
"""
# No `from __future__ import annotations`: TFX reads these type hints at definition time.
import collections
import io
import json
import os

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils

from libs import feature_spec
from pipelines.training import evaluation
from libs import candidate_sources
from pipelines.training.models import sources
from pipelines.training.models.retrieval import QUERY_FEATURES
from pipelines.training.models.inputs import DTYPES, raw_tensors

InputArtifact = tfx.dsl.components.InputArtifact
OutputArtifact = tfx.dsl.components.OutputArtifact
Parameter = tfx.dsl.components.Parameter
BATCH = 2048
CUTOFF = 10  # the k of Recall@k and NDCG@k


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


def _top(serve, queries: dict, k: int) -> list[list]:
    out = []
    for lo in range(0, len(queries["user_id"]), BATCH):
        inputs = raw_tensors({n: queries[n][lo:lo + BATCH] for n in QUERY_FEATURES})
        out.extend(serve(k=tf.constant(k), **inputs)["item_ids"].numpy().tolist())
    return out


def unseen_recommendations(serve, eval_columns: dict, seen: dict) -> dict:
    """Each eval user's top CUTOFF items not rated in train: the per-user lists Recall@10
    and the fairness gate's exposure metrics are computed on."""
    # one query per eval user (their first eval rating's features), enough items to
    # fill the cut-off after removing what they rated in train
    first = {}
    for row, user in enumerate(eval_columns["user_id"]):
        first.setdefault(user, row)
    users = list(first)
    queries = {n: [eval_columns[n][first[u]] for u in users] for n in QUERY_FEATURES}
    depth = CUTOFF + max(len(seen.get(u, ())) for u in users)
    ranked = _top(serve, queries, depth)
    return {u: evaluation.unseen_top_k(r, seen.get(u, set()), CUTOFF)
            for u, r in zip(users, ranked)}


def model_metrics(model_dir: str, eval_columns: dict, seen: dict, k: int) -> dict:
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    accuracy = evaluation.top_k_accuracy(_top(serve, eval_columns, k),
                                         eval_columns["item_id"])
    recommended = unseen_recommendations(serve, eval_columns, seen)
    recall, ndcg = evaluation.recall_ndcg_at_k(
        recommended, evaluation.by_user(eval_columns["user_id"], eval_columns["item_id"]),
        CUTOFF)
    return {"top_k_accuracy": accuracy, f"recall_at_{CUTOFF}": recall,
            f"ndcg_at_{CUTOFF}": ndcg}


def _blend(model_dir: str):
    path = os.path.join(model_dir, "assets.extra", candidate_sources.ARTIFACT)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        arrays = dict(np.load(io.BytesIO(f.read()), allow_pickle=False))
    return candidate_sources.Blend.of(arrays)


def sources_checks(model_uri: str, baseline_uri: str | None, min_ratio: float,
                   tolerance: float) -> tuple[dict, list[str]]:
    """The served order's metrics on the held-out lists, and the reasons it fails."""
    path = os.path.join(model_uri, sources.VALIDATION_FILE)
    if not tf.io.gfile.exists(path):
        return {}, []
    with tf.io.gfile.GFile(path, "rb") as f:
        held_out = dict(np.load(io.BytesIO(f.read()), allow_pickle=False))
    blend = candidate_sources.Blend.of(held_out)
    baseline = _blend(os.path.join(baseline_uri, "Format-Serving")) if baseline_uri else None
    if baseline is not None and baseline.weight.shape != blend.weight.shape:
        baseline = None  # a blend over other features: not comparable
    found = sources.validation_metrics(blend, held_out["features"], held_out["labels"],
                                       held_out["lists"], baseline, held_out.get("rated"))
    ndcg = {name: m["ndcg_at_10"] for name, m in found.items()}
    reasons = []
    if ndcg["blend"] < min_ratio * ndcg["most popular"]:
        reasons.append(f"the candidate sources' blend NDCG@10 {ndcg['blend']:.4f} on the "
                       f"held-out lists is below {min_ratio} x the most-popular order's "
                       f"{ndcg['most popular']:.4f}")
    if "last blessed blend" in ndcg and ndcg["blend"] < ndcg["last blessed blend"] - tolerance:
        reasons.append(f"the candidate sources' blend NDCG@10 {ndcg['blend']:.4f} is worse "
                       f"than the last blessed blend's {ndcg['last blessed blend']:.4f} by "
                       f"more than {tolerance}")
    metrics = {"sources_lists": int(len(np.unique(held_out["lists"]))),
               "sources_validation_days": sources.VALIDATION_DAYS,
               # users who rated anything in the validation days: the all_rated figures'
               "sources_rated_lists": int(held_out["rated"].shape[1]) if "rated" in held_out
               else 0,
               **{f"sources_{name.replace(' ', '_')}_{metric}": round(value, 4)
                  for name, values in found.items() for metric, value in values.items()}}
    return metrics, reasons


@tfx.dsl.components.component
def RetrievalEvaluator(
    examples: InputArtifact[tfx.types.standard_artifacts.Examples],
    model: InputArtifact[tfx.types.standard_artifacts.Model],
    blessing: OutputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    baseline_model: InputArtifact[tfx.types.standard_artifacts.Model] = None,
    k: Parameter[int] = 100,
    min_accuracy: Parameter[float] = 0.0,
    min_ratio_to_popularity: Parameter[float] = 0.0,
    min_recall_ratio_to_popularity: Parameter[float] = 0.0,
    tolerance: Parameter[float] = 0.01,
    sources_min_ratio_to_popularity: Parameter[float] = 0.0,
    sources_tolerance: Parameter[float] = 0.01,
) -> None:
    eval_columns = _read_split(examples, "eval", QUERY_FEATURES + ("item_id",))
    train = _read_split(examples, "train", ("user_id", "item_id"))
    seen = evaluation.by_user(train["user_id"], train["item_id"])
    recall = f"recall_at_{CUTOFF}"
    candidate = model_metrics(os.path.join(model.uri, "Format-Serving"), eval_columns,
                              seen, k)
    popular = evaluation.popularity_metrics(train["user_id"], train["item_id"],
                                            eval_columns["user_id"],
                                            eval_columns["item_id"], k, CUTOFF)
    metrics = {"k": k, "eval_examples": len(eval_columns["item_id"]), **candidate,
               **{f"popularity_{name}": value for name, value in popular.items()}}
    reasons = []
    if candidate["top_k_accuracy"] < min_accuracy:
        reasons.append(f"top-{k} accuracy {candidate['top_k_accuracy']:.4f} is below the "
                       f"minimum {min_accuracy:.4f}")
    for name, ratio in (("top_k_accuracy", min_ratio_to_popularity),
                        (recall, min_recall_ratio_to_popularity)):
        if candidate[name] < ratio * popular[name]:
            reasons.append(f"{name} {candidate[name]:.4f} is below {ratio} x the "
                           f"most-popular baseline's {popular[name]:.4f}")
    if baseline_model is not None:
        baseline = model_metrics(os.path.join(baseline_model.uri, "Format-Serving"),
                                 eval_columns, seen, k)
        metrics.update({f"baseline_{name}": value for name, value in baseline.items()})
        for name in ("top_k_accuracy", recall):
            if candidate[name] < baseline[name] - tolerance:
                reasons.append(f"{name} {candidate[name]:.4f} is worse than the last "
                               f"blessed model's {baseline[name]:.4f} by more than "
                               f"{tolerance}")
        blessing.set_int_custom_property("baseline_model_id", baseline_model.id)
    found, failed = sources_checks(model.uri, baseline_model.uri if baseline_model else None,
                                   sources_min_ratio_to_popularity, sources_tolerance)
    metrics.update(found)
    reasons += failed
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
    for name in ("top_k_accuracy", recall, f"ndcg_at_{CUTOFF}"):
        blessing.set_float_custom_property(name, metrics[name])
