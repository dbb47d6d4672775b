"""A model version's offline evaluation in machine-readable form, and what it promises
online: `<repo>/<model>/<version>/evaluation.json`, beside the model card (the pipeline's
ModelCardWriter writes both; model servers ignore extra files).

  {"model", "version", "training_set", "span", "metrics": {the gate's overall metrics},
   "promise": {metric: value}, "label_days": days}

The promise holds the offline figures the online quality check
(pipelines/monitoring/quality.py) measures the same way on what users later did:
  retrieval  recall_at_10, hit_rate_at_10 of the served order (the candidate sources'
             blend) over every item a user rated in the `label_days` after the list was
             made, candidates or not (the gate's validation lists)
  ranking    rmse of the predicted rating against the ratings given
A version whose catalog was too large for candidate sources promises nothing for
retrieval (the check then reports it without judging).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

FILE = "evaluation.json"
# metric -> (where the gate's metrics hold it, True when higher is better)
PROMISES = {
    "retrieval": {"recall_at_10": ("sources_blend_recall_at_10_all_rated", True),
                  "hit_rate_at_10": ("sources_blend_hit_rate_at_10_all_rated", True)},
    "ranking": {"rmse": ("rmse", False)},
}
LABEL_DAYS_METRIC = "sources_validation_days"


class EvaluationError(ValueError):
    """evaluation.json is missing or malformed; the message names the file and field."""


def higher_is_better(model: str, metric: str) -> bool:
    return PROMISES[model][metric][1]


def document(model: str, version: str | int | None, training_set: str, span: int | None,
             metrics: dict) -> dict:
    """The file's content from the gate's metrics (numbers only are kept)."""
    numbers = {k: float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    promise = {name: numbers[source] for name, (source, _) in PROMISES.get(model, {}).items()
               if source in numbers}
    label_days = numbers.get(LABEL_DAYS_METRIC) if model == "retrieval" else None
    return {"model": model, "version": int(version) if version else None,
            "training_set": training_set, "span": span, "metrics": numbers,
            "promise": promise, "label_days": label_days}


def read(path: str | Path) -> dict:
    """The checked document; EvaluationError names the file and the field."""
    path = Path(path)
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"{path}: no such file (versions trained before "
                              "evaluation.json existed promise nothing)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EvaluationError(f"{path}: cannot read: {err}") from None
    if not isinstance(found, dict):
        raise EvaluationError(f"{path}: expected a JSON object")
    model = found.get("model")
    if model not in PROMISES:
        raise EvaluationError(f"{path}: field 'model' must be one of "
                              f"{', '.join(PROMISES)}, got {model!r}")
    promise = found.get("promise")
    if not isinstance(promise, dict):
        raise EvaluationError(f"{path}: field 'promise' must be an object")
    for name, value in promise.items():
        if name not in PROMISES[model]:
            raise EvaluationError(f"{path}: field 'promise'.{name} is not a {model} metric "
                                  f"({', '.join(PROMISES[model])})")
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not math.isfinite(value)):
            raise EvaluationError(f"{path}: field 'promise'.{name} must be a number, "
                                  f"got {value!r}")
    days = found.get("label_days")
    if days is not None and (not isinstance(days, (int, float)) or days <= 0):
        raise EvaluationError(f"{path}: field 'label_days' must be a positive number")
    return found
