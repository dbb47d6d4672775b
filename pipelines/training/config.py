"""Configuration of one training run (schema; defaults in `pipeline.yaml`)."""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field

BEAM_RUNNERS = {"direct": "DirectRunner", "dataflow": "DataflowRunner",
                "flink": "FlinkRunner", "spark": "SparkRunner"}
BEAM_REQUIRED = {"direct": (), "dataflow": ("project", "region", "temp_location"),
                 "flink": ("flink_master",), "spark": ("spark_master_url",)}
BEAM_DEFAULTS = {"direct": {"direct_running_mode": "in_memory", "direct_num_workers": "1"},
                 "flink": {"environment_type": "EXTERNAL"},
                 "spark": {"environment_type": "EXTERNAL"}}


@dataclass
class PipelineConfig:
    workdir: str = "var"
    pipeline_name: str = "recsys"
    # a training set from the feature store (pipelines/features/training_set.py);
    # "" = the newest under <workdir>/data/training_sets
    training_set: str = ""
    # how ratings split into train and eval (pipelines/data/prepare.py): time (the
    # production protocol), random (80/20 as in the TFRS tutorials), per_user (75/25)
    split: str = "time"
    train_fraction: float = 0.8
    split_seed: int = 42
    retrieval_train_steps: int = 150
    ranking_train_steps: int = 500
    eval_steps: int = 20
    retrieval_k: int = 100
    retrieval_min_accuracy: float = 0.05
    # the model must reach this share of the most-popular baseline's top-k accuracy
    retrieval_min_ratio_to_popularity: float = 0.9
    # Recall@10 (per user, seen items removed) against most-popular's, same run
    retrieval_min_recall_ratio_to_popularity: float = 0.8
    retrieval_accuracy_tolerance: float = 0.01
    ranking_max_rmse: float = 1.2
    ranking_rmse_tolerance: float = 0.01
    hyperparameters: dict[str, dict] = field(default_factory=dict)
    # where the Beam components (statistics, Transform, evaluation) run: direct (this
    # machine), dataflow, flink or spark; beam_options are that runner's options
    # (BEAM_REQUIRED lists the ones each needs), beam_pipeline_args any extra flags
    beam_runner: str = "direct"
    beam_options: dict[str, str] = field(default_factory=dict)
    beam_pipeline_args: list[str] = field(default_factory=list)

    def validate(self) -> None:
        for name in ("retrieval_train_steps", "ranking_train_steps", "eval_steps",
                     "retrieval_k"):
            if getattr(self, name) <= 0:
                raise ValueError(f"field '{name}' must be positive, got {getattr(self, name)}")
        if self.split not in ("time", "random", "per_user"):
            raise ValueError(f"field 'split' must be time, random or per_user, "
                             f"got {self.split!r}")
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"field 'train_fraction' must be in (0, 1), "
                             f"got {self.train_fraction}")
        if self.beam_runner not in BEAM_RUNNERS:
            raise ValueError(f"field 'beam_runner' must be one of {sorted(BEAM_RUNNERS)}, "
                             f"got {self.beam_runner!r}")
        for option in BEAM_REQUIRED[self.beam_runner]:
            if not self.beam_options.get(option):
                raise ValueError(f"field 'beam_options.{option}' is required for "
                                 f"beam_runner {self.beam_runner}")
        unknown = set(self.hyperparameters) - {"retrieval", "ranking"}
        if unknown:
            raise ValueError(f"field 'hyperparameters': unknown model(s) {sorted(unknown)}; "
                             "allowed: ranking, retrieval")

    @property
    def beam_args(self) -> list[str]:
        options = {**BEAM_DEFAULTS.get(self.beam_runner, {}), **self.beam_options}
        return ([f"--runner={BEAM_RUNNERS[self.beam_runner]}"]
                + [f"--{key}={value}" for key, value in sorted(options.items())]
                + list(self.beam_pipeline_args))

    def _path(self, *parts: str) -> str:
        if "://" in self.workdir:  # gs://, s3://: object storage, as a cluster run uses
            return posixpath.join(self.workdir, *parts)
        return os.path.abspath(os.path.join(self.workdir, *parts))

    @property
    def data_out(self) -> str:
        return self._path("data")

    @property
    def examples_dir(self) -> str:
        return self._path("data", "examples")

    @property
    def training_sets_dir(self) -> str:
        return self._path("data", "training_sets")

    @property
    def catalog_file(self) -> str:
        """The item catalog of the training set the run reads (run.py resolves it)."""
        if "://" in self.training_set:
            return posixpath.join(self.training_set, "items.parquet")
        return os.path.join(os.path.abspath(self.training_set), "items.parquet")

    @property
    def pipeline_root(self) -> str:
        return self._path("pipeline")

    @property
    def metadata_path(self) -> str:
        return self._path("metadata.sqlite")

    @property
    def model_repo(self) -> str:
        return self._path("model_repo")
