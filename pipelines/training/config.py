"""Configuration of one training run (schema; defaults in `pipeline.yaml`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field


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
    beam_pipeline_args: list[str] = field(default_factory=lambda: [
        "--direct_running_mode=in_memory", "--direct_num_workers=1"])

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
        unknown = set(self.hyperparameters) - {"retrieval", "ranking"}
        if unknown:
            raise ValueError(f"field 'hyperparameters': unknown model(s) {sorted(unknown)}; "
                             "allowed: ranking, retrieval")

    def _path(self, *parts: str) -> str:
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
