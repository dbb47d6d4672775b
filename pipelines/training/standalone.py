"""Runs a Trainer `run_fn` outside TFX, with the arguments TFX's Trainer would give it.

  python -m pipelines.training.standalone --model ranking|retrieval --out DIR
      (--pipeline-root DIR | --transform-graph DIR --transformed-examples DIR)
      [--train-steps N] [--eval-steps N] [--custom-config JSON] [--seed N]

Inputs are Transform's outputs as TFX lays them out: a transform graph directory
(transform_fn/, transformed_metadata/) and transformed examples (Split-train/,
Split-eval/); `--pipeline-root` takes the newest of a pipeline run's. The model lands in
<out>/model, its learning curve in <out>/model_run. With TF_CONFIG naming several
workers, each worker runs this same command and they train together.
"""
import os
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)
# TensorFlow Recommenders needs Keras 2; this must happen before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

MODELS = ("retrieval", "ranking")
TELEMETRY = ["recsys", "standalone_trainer"]


def data_accessor():
    """TFX's DataAccessor over tf.Example TFRecords (what the Trainer gets for
    Transform's output)."""
    from tfx.components.trainer.fn_args_utils import DataAccessor
    from tfx_bsl.public import tfxio

    def tf_dataset_factory(file_pattern, options, schema):
        return tfxio.TFExampleRecord(file_pattern=file_pattern, schema=schema,
                                     telemetry_descriptors=TELEMETRY
                                     ).TensorFlowDataset(options)

    def record_batch_factory(file_pattern, options, schema):
        return tfxio.TFExampleRecord(file_pattern=file_pattern, schema=schema,
                                     telemetry_descriptors=TELEMETRY
                                     ).RecordBatches(options)

    return DataAccessor(tf_dataset_factory=tf_dataset_factory,
                        record_batch_factory=record_batch_factory,
                        data_view_decode_fn=None)


def fn_args(transform_graph: str, transformed_examples: str, out: str, train_steps: int,
            eval_steps: int, custom_config: dict):
    """The FnArgs TFX's Trainer builds, for Transform output at plain paths."""
    from tfx.components.trainer.fn_args_utils import FnArgs

    def files(split: str) -> list[str]:
        return [os.path.join(transformed_examples, f"Split-{split}", "*")]

    return FnArgs(working_dir=os.path.join(out, "working"),
                  train_files=files("train"), eval_files=files("eval"),
                  train_steps=train_steps, eval_steps=eval_steps,
                  transform_output=transform_graph, transform_graph_path=transform_graph,
                  serving_model_dir=os.path.join(out, "model"),
                  model_run_dir=os.path.join(out, "model_run"),
                  custom_config=custom_config, data_accessor=data_accessor())


def run(model: str, args) -> None:
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    importlib.import_module(f"pipelines.training.models.{model}").run_fn(args)


def newest_transform_output(pipeline_root: str | Path) -> tuple[str, str]:
    """(transform graph, transformed examples) of a pipeline's newest Transform run."""
    transform = Path(pipeline_root) / "Transform"

    def newest(kind: str) -> str:
        runs = [p for p in (transform / kind).glob("*") if p.name.isdigit()]
        if not runs:
            raise ValueError(f"{transform / kind}: no Transform output; run the pipeline")
        return str(max(runs, key=lambda p: int(p.name)))

    return newest("transform_graph"), newest("transformed_examples")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--out", required=True)
    parser.add_argument("--pipeline-root", help="take the newest Transform output here")
    parser.add_argument("--transform-graph")
    parser.add_argument("--transformed-examples")
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--eval-steps", type=int, default=20)
    parser.add_argument("--custom-config", default="{}", help="JSON, as the Trainer's")
    parser.add_argument("--seed", type=int,
                        help="seed Python, NumPy and TensorFlow first: a repeatable run")
    args = parser.parse_args(argv)
    try:
        if args.pipeline_root:
            graph, examples = newest_transform_output(args.pipeline_root)
        elif args.transform_graph and args.transformed_examples:
            graph, examples = args.transform_graph, args.transformed_examples
        else:
            raise ValueError("give --pipeline-root, or --transform-graph and "
                             "--transformed-examples")
        if args.seed is not None:
            import tensorflow as tf
            tf.keras.utils.set_random_seed(args.seed)
        run(args.model, fn_args(graph, examples, args.out, args.train_steps,
                                args.eval_steps, json.loads(args.custom_config)))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
