"""Runs the training pipeline locally: training set -> TFX (LocalDagRunner, Beam).

  python -m pipelines.training.run [--config FILE] [--workdir DIR]
                                   [--training-set DIR] [--set key=value ...]

Reads a training set the feature store built (`make features`: batch job, ingestion,
point-in-time join), by default the newest span under <workdir>/data/training_sets.
"""
import os
import warnings

# Google client libraries warn about Python 3.10 on import; TFX 1.16 needs 3.10.
warnings.filterwarnings("ignore", category=FutureWarning)
# TensorFlow Recommenders needs Keras 2; this must happen before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from libs import config as config_lib  # noqa: E402
from pipelines.data import prepare  # noqa: E402
from pipelines.data.dataset import DataError  # noqa: E402
from pipelines.training import code_version, config as pipeline_config  # noqa: E402
from pipelines.training.config import PipelineConfig  # noqa: E402



def _show_component_progress(total: int) -> dict[str, float]:
    """Prints one line per finished component (LocalDagRunner runs them in order);
    returns the seconds each took, filled in as they finish."""
    from tfx.orchestration.portable import launcher

    launch, started, done = launcher.Launcher.launch, time.monotonic(), []
    seconds: dict[str, float] = {}

    def launch_with_progress(self):
        name, begin = self._pipeline_node.node_info.id, time.monotonic()
        result = launch(self)
        done.append(name)
        seconds[name] = round(time.monotonic() - begin, 1)
        print(f"[{len(done):2d}/{total}] {name:26s} {time.monotonic() - begin:6.1f}s "
              f"(total {time.monotonic() - started:4.0f}s)", flush=True)
        return result

    launcher.Launcher.launch = launch_with_progress
    return seconds


def newest(directory: Path) -> Path | None:
    runs = [p for p in directory.glob("*") if p.name.isdigit()]
    return max(runs, key=lambda p: int(p.name)) if runs else None


def summarize(config: PipelineConfig) -> dict:
    """What this run produced: gate decisions, metrics and the model versions pushed."""
    root = Path(config.pipeline_root)
    summary = {}
    blessing = newest(root / "retrieval_evaluator" / "blessing")
    if blessing:
        summary["retrieval"] = json.loads((blessing / "metrics.json").read_text())
    blessing = newest(root / "ranking_evaluator" / "blessing")
    evaluation = newest(root / "ranking_evaluator" / "evaluation")
    if blessing and evaluation:
        import tensorflow_model_analysis as tfma
        result = tfma.load_eval_result(str(evaluation))
        overall = dict(result.get_metrics_for_slice() or {})
        summary["ranking"] = {
            "blessed": (blessing / "BLESSED").exists(),
            **{k.name if hasattr(k, "name") else str(k): v.get("doubleValue")
               for k, v in overall.items()}}
    for name in ("retrieval", "ranking"):
        version = newest(Path(config.model_repo) / name)
        summary.setdefault(name, {})["serving_version"] = int(version.name) if version else None
        summary[name].update(final_gate(root, name))
        summary[name]["hyperparameters"] = hyperparameters_used(config, name)
    return summary


def final_gate(root: Path, name: str) -> dict:
    """The last gate's verdict (what the Pusher obeyed): blessed or why not, the fairness
    report, the item-mean baseline (ranking) and the model card."""
    out = {}
    gate = newest(root / f"{name}_fairness" / "blessing")
    if gate:
        verdict = json.loads((gate / "metrics.json").read_text())
        out["final_gate"] = {"blessed": verdict["blessed"], "reasons": verdict["reasons"],
                             "fairness_report": verdict["report"]}
    baseline = newest(root / f"{name}_baseline_gate" / "blessing")
    if baseline:
        out["item_mean_baseline"] = json.loads((baseline / "metrics.json").read_text())
    card = newest(root / f"{name}_model_card" / "card")
    if card:
        out["model_card"] = str(card / "model_card.md")
    return out


def hyperparameters_used(config: PipelineConfig, name: str) -> dict:
    """What the model's Trainer trained with (its record beside the model: values, and
    which came tuned and which explicit) and, when this run searched, every trial."""
    from pipelines.training.models.hyperparameters import RECORD_FILE
    from pipelines.training.models.tuning import OBJECTIVES

    root = Path(config.pipeline_root)
    run = newest(root / f"{name}_trainer" / "model_run")
    used = json.loads((run / RECORD_FILE).read_text()) if run else {}
    results = newest(root / f"{name}_tuner" / "tuner_results")
    if name in config.tuned_models and results:
        trials = json.loads((results / "tuner_results.json").read_text())
        used["search"] = {"objective": OBJECTIVES[name].name,
                          "direction": OBJECTIVES[name].direction, "trials": trials}
    return used


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train and push the recommender models.")
    pipeline_config.add_arguments(
        parser, workdir_help="where data, pipeline outputs, ML Metadata and the model "
                             "repository go",
        training_set_help="a training set directory (span-<S>)")
    args = parser.parse_args(argv)

    try:
        config = pipeline_config.from_arguments(args)
        start = time.monotonic()
        if not config.training_set:
            config.training_set = str(prepare.newest_training_set(config.training_sets_dir))
        from pipelines.training.models import tuning
        tuning.check_names(config.hyperparameters, config.tuning_search_space)
        snapshot = prepare.prepare(config.training_set, config.data_out,
                                   config.train_fraction, config.split, config.seed,
                                   sample_users=config.sample_users)
    except (config_lib.ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from tfx import v1 as tfx
    from pipelines.training.pipeline import create_pipeline

    pipeline = create_pipeline(config)
    component_seconds = _show_component_progress(len(pipeline.components))
    logging.getLogger().setLevel(logging.WARNING)
    print(f"pipeline: {len(pipeline.components)} components, "
          f"span {snapshot['span']}, training set sha256 {snapshot['content_sha256'][:12]}",
          flush=True)
    try:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    except Exception as err:  # a component failed: say which and why, not a traceback
        print(f"error: the pipeline stopped: {type(err).__name__}: {err}", file=sys.stderr)
        return 1

    summary = {"snapshot": snapshot, "code": code_version.describe(),
               "wall_seconds": round(time.monotonic() - start, 1),
               "component_seconds": component_seconds, **summarize(config)}
    Path(config.workdir, "last_run.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
