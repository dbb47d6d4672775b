"""TFX component that gates the ranking model on a baseline computed in the same run.

TFMA's Evaluator holds the ranking model to an absolute RMSE bound and to the last
blessed model; neither says whether it learnt more than item popularity. This gate scores
the eval split with the model (its `serving_examples` signature, as TFMA does) and with
the item-mean baseline (baselines.item_mean_ratings, fitted on the train split), and
blesses the model only if TFMA blessed it and its RMSE is below the baseline's by at least
`min_rmse_gain`.
"""
# No `from __future__ import annotations`: TFX reads these type hints at definition time.
import os

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils

from libs import feature_spec
from pipelines.training import baselines
from pipelines.training.components.gate_blessing import upstream_reasons, write_blessing
from pipelines.training.components.retrieval_evaluator import BATCH, _read_split
from pipelines.training.models import ranking

InputArtifact = tfx.dsl.components.InputArtifact
OutputArtifact = tfx.dsl.components.OutputArtifact
Parameter = tfx.dsl.components.Parameter
EVAL_COLUMNS = ("user_id", "gender", "age", "item_id", feature_spec.LABEL)


def predict_eval(examples, model_dir: str) -> tuple[dict, np.ndarray]:
    """The eval split's `EVAL_COLUMNS` and the model's prediction for each row (the
    records are read once, in file order, for both)."""
    columns = _read_split(examples, "eval", EVAL_COLUMNS)
    predict = tf.saved_model.load(model_dir).signatures["serving_examples"]
    files = tf.io.gfile.glob(os.path.join(artifact_utils.get_split_uri([examples], "eval"),
                                          "*"))
    predictions = []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(BATCH):
        predictions.extend(tf.reshape(predict(examples=batch)[ranking.OUTPUT_KEY],
                                      [-1]).numpy().tolist())
    return columns, np.asarray(predictions, float)


def baseline_predictions(examples, eval_items: list) -> np.ndarray:
    train = _read_split(examples, "train", ("item_id", feature_spec.LABEL))
    return baselines.item_mean_ratings(train["item_id"], train[feature_spec.LABEL],
                                       eval_items)


def tfma_reasons(evaluation_uri: str) -> list[str]:
    """Each threshold TFMA's Evaluator found broken, by slice (its blessing file is empty)."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    reasons = []
    for per_slice in result.metric_validations_per_slice:
        where = ", ".join(f"{s.column}={s.bytes_value.decode() or s.int64_value}"
                          for s in per_slice.slice_key.single_slice_keys) or "overall"
        for failure in per_slice.failures:
            value = failure.metric_value.double_value.value
            threshold = " ".join(str(failure.metric_threshold).split())
            reasons.append(f"ranking_evaluator (TFMA), {where}: {failure.metric_key.name} "
                           f"{value:.4f} breaks its threshold ({threshold})")
    return reasons


def rmse(ratings, predictions) -> float:
    return float(np.sqrt(np.mean((np.asarray(ratings) - np.asarray(predictions)) ** 2)))


@tfx.dsl.components.component
def RankingBaselineGate(
    examples: InputArtifact[tfx.types.standard_artifacts.Examples],
    model: InputArtifact[tfx.types.standard_artifacts.Model],
    upstream_blessing: InputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    evaluation: InputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    blessing: OutputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    min_rmse_gain: Parameter[float] = 0.0,
) -> None:
    columns, predictions = predict_eval(examples, os.path.join(model.uri, "Format-Serving"))
    ratings = columns[feature_spec.LABEL]
    metrics = {"eval_examples": len(ratings), "rmse": rmse(ratings, predictions),
               "item_mean_rmse": rmse(ratings, baseline_predictions(examples,
                                                                    columns["item_id"]))}
    reasons = upstream_reasons(upstream_blessing, "ranking_evaluator (TFMA)")
    if reasons:
        reasons = tfma_reasons(evaluation.uri) or reasons
    if metrics["rmse"] > metrics["item_mean_rmse"] - min_rmse_gain:
        reasons.append(f"RMSE {metrics['rmse']:.4f} is not below the item-mean baseline's "
                       f"{metrics['item_mean_rmse']:.4f} by ranking_min_rmse_gain_over_"
                       f"item_mean {min_rmse_gain}")
    write_blessing(blessing, model, reasons, metrics, "RankingBaselineGate")
    for name in ("rmse", "item_mean_rmse"):
        blessing.set_float_custom_property(name, metrics[name])
