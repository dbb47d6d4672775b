"""Compiles the training pipeline for Kubeflow Pipelines / Vertex AI (KubeflowV2DagRunner).

  python -m pipelines.training.compile --image IMAGE --workdir gs://BUCKET/recsys
                                       --training-set gs://BUCKET/recsys/data/training_sets/span-S
                                       [--out recsys_pipeline.json] [--set key=value ...]

The same components and config as the local run; paths are object-storage URIs, ML
Metadata is the orchestrator's, and the Beam components run where `beam_runner` and
`beam_options` say (e.g. --set beam_runner=dataflow --set beam_options='{project: p,
region: europe-west4, temp_location: gs://BUCKET/tmp}'). The examples of the training
set's span are prepared before a run (pipelines/data/prepare.py).
"""
import os
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from libs import config as config_lib  # noqa: E402
from pipelines.training import config as pipeline_config  # noqa: E402
from pipelines.training.config import PipelineConfig  # noqa: E402



def compile_pipeline(config: PipelineConfig, image: str, out: str | Path) -> Path:
    from tfx import v1 as tfx

    from pipelines.training.pipeline import create_pipeline

    out = Path(out)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image),
        output_dir=str(out.parent), output_filename=out.name)
    runner.run(create_pipeline(config, local=False), write_out=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pipeline_config.add_arguments(parser, workdir_help="e.g. gs://bucket/recsys",
                                  training_set_help="e.g. gs://bucket/recsys/data/"
                                                    "training_sets/span-S", required=True)
    parser.add_argument("--image", required=True, help="the pipeline's container image")
    parser.add_argument("--out", default="recsys_pipeline.json")
    args = parser.parse_args(argv)
    try:
        config = pipeline_config.from_arguments(args)
    except config_lib.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"compiled: {compile_pipeline(config, args.image, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
