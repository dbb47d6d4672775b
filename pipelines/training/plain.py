"""The pipeline's training without TFX: what the models alone cost, to weigh the pipeline.

  python -m pipelines.training.plain [--config FILE] [--workdir DIR]
                                     [--training-set DIR] [--set key=value ...]
  make train-plain    (workdir var/plain, the newest training set under var/)

Same configuration and overrides as pipelines.training.run, and the same work a model
needs: the split prepared as the pipeline's (pipelines/data/prepare.py), the same
`preprocessing_fn` analyzed and applied in process (transform_in_process.py), then the
retrieval and ranking `run_fn`s with the same steps, hyperparameters and catalog
(standalone.py). No orchestration, ML Metadata, statistics, schema, validation,
evaluation or gates. Writes <workdir>/plain_run.json: seconds per stage, the wall time and
each model's final eval metrics.
"""
import os
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)
# TensorFlow Recommenders needs Keras 2; this must happen before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from libs import config as config_lib  # noqa: E402
from pipelines.data import prepare  # noqa: E402
from pipelines.data.dataset import DataError  # noqa: E402
from pipelines.training import config as pipeline_config  # noqa: E402
from pipelines.training.config import PipelineConfig  # noqa: E402

SUMMARY_FILE = "plain_run.json"


def train(config: PipelineConfig, progress=print) -> dict:
    from pipelines.training import standalone, transform_in_process

    started = time.monotonic()
    seconds = {}

    def lap(stage: str, begin: float) -> None:
        seconds[stage] = round(time.monotonic() - begin, 1)
        progress(f"{stage:10s} {seconds[stage]:6.1f}s (total "
                 f"{time.monotonic() - started:4.0f}s)")

    begin = time.monotonic()
    if not config.training_set:
        config.training_set = str(prepare.newest_training_set(config.training_sets_dir))
    snapshot = prepare.prepare(config.training_set, config.data_out, config.train_fraction,
                               config.split, config.seed, progress=None,
                               sample_users=config.sample_users)
    lap("prepare", begin)
    begin = time.monotonic()
    graph, examples = transform_in_process.transform(
        Path(config.examples_dir) / f"span-{snapshot['span']}",
        os.path.join(config.workdir, "transform"))
    lap("transform", begin)
    metrics = {}
    for name, steps in (("retrieval", config.retrieval_train_steps),
                        ("ranking", config.ranking_train_steps)):
        begin = time.monotonic()
        out = os.path.join(config.workdir, name)
        shutil.rmtree(out, ignore_errors=True)  # this run's model and curve only
        standalone.run(name, standalone.fn_args(
            graph, examples, out, steps, config.eval_steps,
            {"catalog": config.catalog_file, name: config.hyperparameters.get(name, {})}))
        curve = json.loads(Path(out, "model_run", "history.json").read_text())
        metrics[name] = {k: v[-1] for k, v in curve.items() if k.startswith("val_")}
        lap(name, begin)
    return {"span": snapshot["span"], "examples_sha256": snapshot["examples_sha256"],
            "split": config.split, "seconds": seconds,
            "wall_seconds": round(time.monotonic() - started, 1), "metrics": metrics}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pipeline_config.add_arguments(
        parser, workdir_help="where the split, Transform output and models go",
        training_set_help="a training set (span-<S>), or a directory of them: the newest")
    args = parser.parse_args(argv)
    try:
        config = pipeline_config.from_arguments(args)
        if config.training_set and not Path(config.training_set, "snapshot.json").exists():
            config.training_set = str(prepare.newest_training_set(config.training_set))
        summary = train(config)
    except (config_lib.ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    Path(config.workdir).mkdir(parents=True, exist_ok=True)
    Path(config.workdir, SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
