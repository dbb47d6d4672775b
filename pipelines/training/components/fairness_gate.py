"""TFX component that gates a model on fairness across user groups (fairness.py).

It follows a model's other gates: given their blessing, it blesses the model only if that
one is blessed and every fairness bound holds, so the Pusher and the latest-blessed-model
resolver read its blessing alone. One component serves both models (`model_kind`):
  retrieval  the top 10 unseen items per eval user (the retrieval evaluator's own
             queries): Recall@10 and exposure (popularity, long tail, genre mix) per group
  ranking    a prediction per eval rating: RMSE per group, beside the item-mean
             baseline's
Outputs: the blessing (metrics.json, reasons in NOT_BLESSED) and `report`, an artifact
holding fairness.json and report.html (per-group tables and charts).
"""
# No `from __future__ import annotations`: TFX reads these type hints at definition time.
import json
import os

import tensorflow as tf
from tfx import v1 as tfx

from libs import feature_spec
from pipelines.training import evaluation, fairness, fairness_report
from pipelines.training.components import ranking_baseline_gate
from pipelines.training.components.gate_blessing import upstream_reasons, write_blessing
from pipelines.training.components.retrieval_evaluator import (
    CUTOFF, _read_split, unseen_recommendations)
from pipelines.training.models.retrieval import QUERY_FEATURES, read_catalog

InputArtifact = tfx.dsl.components.InputArtifact
OutputArtifact = tfx.dsl.components.OutputArtifact
Parameter = tfx.dsl.components.Parameter
USER_COLUMNS = ("user_id", "gender", "age")  # what groups a user


def retrieval_tables(examples, model_dir: str, catalog_file: str,
                     head_fraction: float) -> dict:
    eval_columns = _read_split(examples, "eval",
                               tuple(dict.fromkeys(QUERY_FEATURES + USER_COLUMNS
                                                   + ("item_id",))))
    train = _read_split(examples, "train", USER_COLUMNS + ("item_id",))
    seen = evaluation.by_user(train["user_id"], train["item_id"])
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    recommended = unseen_recommendations(serve, eval_columns, seen)
    catalog = read_catalog(catalog_file)
    items = [i.encode() for i in catalog["item_id"]]  # as the model and examples give them
    groups = fairness.user_groups(*(eval_columns[n] + train[n] for n in USER_COLUMNS))
    return fairness.retrieval_tables(
        recommended, evaluation.by_user(eval_columns["user_id"], eval_columns["item_id"]),
        groups, fairness.popularity_percentiles(train["item_id"], items),
        fairness.head_items(train["item_id"], items, head_fraction),
        dict(zip(items, catalog["genres"])), train["user_id"], train["item_id"], CUTOFF)


def ranking_tables(examples, model_dir: str) -> dict:
    columns, predictions = ranking_baseline_gate.predict_eval(examples, model_dir)
    baseline = ranking_baseline_gate.baseline_predictions(examples, columns["item_id"])
    groups = fairness.user_groups(*(columns[n] for n in USER_COLUMNS))
    return fairness.ranking_tables(columns[feature_spec.LABEL], predictions, baseline,
                                   columns["user_id"], groups)


@tfx.dsl.components.component
def FairnessGate(
    examples: InputArtifact[tfx.types.standard_artifacts.Examples],
    model: InputArtifact[tfx.types.standard_artifacts.Model],
    upstream_blessing: InputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    blessing: OutputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    report: OutputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    model_kind: Parameter[str],
    limits: Parameter[str] = "{}",
    min_group_size: Parameter[int] = 30,
    confidence: Parameter[float] = 0.95,
    head_fraction: Parameter[float] = 0.2,
    catalog: Parameter[str] = "",
    upstream_name: Parameter[str] = "upstream gate",
) -> None:
    """`limits`: JSON {config field: limit} of the bounds (fairness.BOUNDS) to check."""
    model_dir = os.path.join(model.uri, "Format-Serving")
    if model_kind == "retrieval":
        tables = retrieval_tables(examples, model_dir, catalog, head_fraction)
    elif model_kind == "ranking":
        tables = ranking_tables(examples, model_dir)
    else:
        raise ValueError(f"model_kind must be retrieval or ranking, got {model_kind!r}")
    bounds = json.loads(limits)
    reasons = upstream_reasons(upstream_blessing, upstream_name)
    checks = fairness.evaluate_bounds(tables, bounds, min_group_size, confidence)
    reasons += [fairness.REASON_PREFIX + r for r in fairness.check_bounds(
        tables, bounds, min_group_size, confidence)]
    metrics = {"model": model_kind, "min_group_size": min_group_size,
               "confidence": confidence, "limits": bounds,
               "checks": [c.as_dict() for c in checks], "groups": fairness.as_json(tables)}
    tf.io.gfile.makedirs(report.uri)
    report_file = os.path.join(report.uri, "report.html")
    with tf.io.gfile.GFile(os.path.join(report.uri, "fairness.json"), "w") as f:
        f.write(json.dumps({**metrics, "reasons": reasons}, indent=2))
    with tf.io.gfile.GFile(report_file, "w") as f:
        f.write(fairness_report.html(model_kind, tables, bounds, min_group_size, reasons,
                                     checks))
    write_blessing(blessing, model, reasons, {**metrics, "report": report_file},
                   f"FairnessGate({model_kind})")
    for target in (blessing, report):
        target.set_string_custom_property("fairness_report", report_file)
