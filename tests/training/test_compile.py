"""The pipeline compiles for Kubeflow Pipelines / Vertex AI, and Beam's runner and options
come from the config, checked at load time."""
import json

import pytest

from libs import config as config_lib
from pipelines.training import compile as compile_module
from pipelines.training.config import PipelineConfig
from tests.conftest import ROOT

IMAGE = "ghcr.io/recsys-platform/pipeline:0.1.0"
DATAFLOW = {"beam_runner": "dataflow", "beam_options": {
    "project": "p1", "region": "europe-west4", "temp_location": "gs://b/tmp"}}


def load(**overrides) -> PipelineConfig:
    return config_lib.load(PipelineConfig, ROOT / "pipelines/training/pipeline.yaml",
                           overrides=overrides, overrides_name="test")


def test_compiled_spec_runs_every_component_in_the_image_on_dataflow(tmp_path):
    config = load(workdir="gs://b/recsys", training_set="gs://b/recsys/sets/span-7",
                  **DATAFLOW)
    spec = json.loads(compile_module.compile_pipeline(config, IMAGE, tmp_path / "p.json")
                      .read_text())["pipelineSpec"]
    tasks = spec["root"]["dag"]["tasks"]
    for name in ("ImportExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
                 "DataValidationGate", "Transform", "retrieval_trainer",
                 "retrieval_evaluator", "retrieval_pusher", "ranking_trainer",
                 "ranking_evaluator", "ranking_pusher"):
        assert name in tasks
    executors = spec["deploymentSpec"]["executors"]
    containers = [e["container"] for e in executors.values() if "container" in e]
    assert containers and all(c["image"] == IMAGE for c in containers)
    transform = executors["Transform_executor"]["container"]["args"]
    assert {"--runner=DataflowRunner", "--project=p1", "--region=europe-west4",
            "--temp_location=gs://b/tmp"} <= set(transform)
    example_gen = tasks["ImportExampleGen"]["inputs"]["parameters"]
    assert example_gen["input_base"]["runtimeValue"]["constantValue"]["stringValue"] == \
        "gs://b/recsys/data/examples"
    assert "gs://b/recsys/sets/span-7/items.parquet" in json.dumps(spec)


@pytest.mark.parametrize("runner,options,flag", [
    ("direct", {}, "--direct_running_mode=in_memory"),
    ("flink", {"flink_master": "flink:8081"}, "--flink_master=flink:8081"),
    ("spark", {"spark_master_url": "spark://m:7077"}, "--spark_master_url=spark://m:7077"),
])
def test_each_runner_gets_its_flags(runner, options, flag):
    args = load(beam_runner=runner, beam_options=options).beam_args
    assert args[0].startswith("--runner=") and flag in args


def test_a_runner_without_its_required_option_is_refused_naming_it():
    with pytest.raises(config_lib.ConfigError, match="beam_options.temp_location"):
        load(beam_runner="dataflow", beam_options={"project": "p", "region": "r"})
    with pytest.raises(config_lib.ConfigError, match="beam_runner"):
        load(beam_runner="samza")
