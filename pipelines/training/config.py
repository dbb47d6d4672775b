"""Configuration of one training run (schema; defaults in `pipeline.yaml`)."""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field

from libs import config as config_lib
from pipelines.training import search_space
from pipelines.training.search_space import Dimension

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipeline.yaml")
BEAM_RUNNERS = {"direct": "DirectRunner", "dataflow": "DataflowRunner",
                "flink": "FlinkRunner", "spark": "SparkRunner"}
BEAM_REQUIRED = {"direct": (), "dataflow": ("project", "region", "temp_location"),
                 "flink": ("flink_master",), "spark": ("spark_master_url",)}
# sdk_container_image on the DirectRunner: TFX reads any image flag as "the Beam workers
# already have TFX"; without one, every Beam component copies TFX (49 MB) into /tmp, builds
# an sdist from it (~3 s) and never deletes it. DirectRunner workers run in this
# interpreter and never read the image.
BEAM_DEFAULTS = {"direct": {"direct_running_mode": "in_memory", "direct_num_workers": "1",
                            "sdk_container_image": "none-direct-runner-workers-run-in-process"},
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
    # every random step of a run: the data split, the input shuffles, weight
    # initialisation, the sources' blend and candidate index, the tuner's trials; the same
    # data, config and seed give the same models and metrics
    seed: int = 42
    # share of users the run trains and evaluates on, each with all their ratings (chosen
    # by a hash of the user id, so the same users whatever the data's size or order);
    # 1.0 = the whole training set. Large data: try a sample first.
    sample_users: float = 1.0
    retrieval_train_steps: int = 150
    ranking_train_steps: int = 750
    eval_steps: int = 20
    retrieval_k: int = 100
    retrieval_min_accuracy: float = 0.05
    # the model must reach this share of the most-popular baseline's top-k accuracy
    retrieval_min_ratio_to_popularity: float = 0.9
    # Recall@10 (per user, seen items removed) against most-popular's, same run
    retrieval_min_recall_ratio_to_popularity: float = 0.8
    retrieval_accuracy_tolerance: float = 0.01
    # The order the candidate service serves (the sources' blend, models/sources.py), on
    # the lists of the data's last 14 days, trained before them: its NDCG@10 must reach this
    # multiple of the most-popular order's, and the last blessed blend's minus the
    # tolerance
    sources_min_ratio_to_popularity: float = 1.1
    sources_ndcg_tolerance: float = 0.01
    # TFMA: the whole eval split's RMSE (its gender slices are held to the last blessed
    # model only; a group's quality is judged against the item-mean baseline by the
    # fairness gate, as some groups' ratings are harder to predict for any model)
    ranking_max_rmse: float = 1.2
    ranking_rmse_tolerance: float = 0.01
    hyperparameters: dict[str, dict] = field(default_factory=dict)
    # Fairness gates (pipelines/training/fairness.py), after each model's evaluator: per
    # user group (gender, age group), a model is blessed only if the spread between groups
    # stays within these bounds. Groups with fewer than fairness_min_group_size eval users
    # are reported but not gated.
    fairness_min_group_size: int = 30
    # a gap blocks only when its bootstrap interval at this level lies past the bound
    fairness_confidence: float = 0.95
    # the head: this share of the catalog, the most rated in train; the rest is long tail
    fairness_head_fraction: float = 0.2
    # retrieval Recall@10: largest minus smallest group's, and smallest / largest (the
    # ratio transfers between data sets; the difference grows with the level of recall)
    fairness_max_recall_difference: float = 0.1
    fairness_min_recall_ratio: float = 0.4
    # exposure in the top 10: mean popularity percentile and long-tail share of the items
    # recommended, largest minus smallest group's
    fairness_max_popularity_difference: float = 0.05
    fairness_max_long_tail_difference: float = 0.1
    # per group, total variation distance (0..1) between the genre mix of its
    # recommendations and of its training ratings
    fairness_max_genre_gap: float = 0.4
    # ranking RMSE: largest minus smallest group's
    fairness_max_rmse_difference: float = 0.3
    # ranking RMSE of each group minus the item-mean baseline's on the group's ratings: the
    # model may not serve a group worse than that baseline by more than this
    fairness_max_rmse_excess_over_item_mean: float = 0.05
    # the ranking model's RMSE must be below the item-mean baseline's (same run, same
    # eval split) by at least this much
    ranking_min_rmse_gain_over_item_mean: float = 0.0
    # Hyperparameter search (TFX Tuner + KerasTuner random search), one per model with a
    # search space. Off by default: a plain run trains with the best hyperparameters the
    # latest search recorded in ML Metadata (explicit `hyperparameters` still win).
    tune: bool = False
    # model -> hyperparameter -> {choices: [...]} or {min, max, step, log}
    tuning_search_space: dict[str, dict[str, Dimension]] = field(default_factory=dict)
    tuning_max_trials: int = 4
    # 0: as many as the model's Trainer takes. Shorter trials are cheaper but favour what
    # learns fast: on MovieLens, 30-step trials picked a retrieval learning rate that was
    # worse after the Trainer's 150 steps.
    tuning_steps_per_trial: int = 0
    # stop starting new trials after this many minutes per model (0: no time budget)
    tuning_max_minutes: float = 0.0
    # where the Beam components (statistics, Transform, evaluation) run: direct (this
    # machine), dataflow, flink or spark; beam_options are that runner's options
    # (BEAM_REQUIRED lists the ones each needs), beam_pipeline_args any extra flags
    beam_runner: str = "direct"
    beam_options: dict[str, str] = field(default_factory=dict)
    beam_pipeline_args: list[str] = field(default_factory=list)

    def validate(self) -> None:
        for name in ("retrieval_train_steps", "ranking_train_steps", "eval_steps",
                     "retrieval_k", "tuning_max_trials"):
            if getattr(self, name) <= 0:
                raise ValueError(f"field '{name}' must be positive, got {getattr(self, name)}")
        if self.split not in ("time", "random", "per_user"):
            raise ValueError(f"field 'split' must be time, random or per_user, "
                             f"got {self.split!r}")
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"field 'train_fraction' must be in (0, 1), "
                             f"got {self.train_fraction}")
        if not 0 < self.sample_users <= 1:
            raise ValueError(f"field 'sample_users' must be in (0, 1], "
                             f"got {self.sample_users}")
        if self.beam_runner not in BEAM_RUNNERS:
            raise ValueError(f"field 'beam_runner' must be one of {sorted(BEAM_RUNNERS)}, "
                             f"got {self.beam_runner!r}")
        for option in BEAM_REQUIRED[self.beam_runner]:
            if not self.beam_options.get(option):
                raise ValueError(f"field 'beam_options.{option}' is required for "
                                 f"beam_runner {self.beam_runner}")
        if not 0.5 <= self.fairness_confidence < 1.0:
            raise ValueError("field 'fairness_confidence' must be in [0.5, 1), got "
                             f"{self.fairness_confidence}")
        if self.fairness_min_group_size < 1:
            raise ValueError(f"field 'fairness_min_group_size' must be at least 1, "
                             f"got {self.fairness_min_group_size}")
        for name in ("fairness_head_fraction", "fairness_min_recall_ratio",
                     "fairness_max_recall_difference", "fairness_max_popularity_difference",
                     "fairness_max_long_tail_difference", "fairness_max_genre_gap"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"field '{name}' must be between 0 and 1, "
                                 f"got {getattr(self, name)}")
        for name in ("fairness_max_rmse_difference", "fairness_max_rmse_excess_over_item_mean",
                     "ranking_min_rmse_gain_over_item_mean"):
            if getattr(self, name) < 0:
                raise ValueError(f"field '{name}' must not be negative, "
                                 f"got {getattr(self, name)}")
        unknown = set(self.hyperparameters) - {"retrieval", "ranking"}
        if unknown:
            raise ValueError(f"field 'hyperparameters': unknown model(s) {sorted(unknown)}; "
                             "allowed: ranking, retrieval")
        search_space.check(self.tuning_search_space)
        for name in ("tuning_steps_per_trial", "tuning_max_minutes"):
            if getattr(self, name) < 0:
                raise ValueError(f"field '{name}' must not be negative, "
                                 f"got {getattr(self, name)}")
        if self.tune:
            if not any(self.tuning_search_space.values()):
                raise ValueError("field 'tune' is on but 'tuning_search_space' is empty")
            for model, dimensions in self.tuning_search_space.items():
                fixed = set(dimensions) & set(self.hyperparameters.get(model, {}))
                if fixed:
                    name = sorted(fixed)[0]
                    raise ValueError(
                        f"field 'hyperparameters.{model}.{name}' fixes a hyperparameter "
                        f"that 'tuning_search_space.{model}.{name}' searches; remove one")

    def steps_per_trial(self, model: str) -> int:
        return self.tuning_steps_per_trial or getattr(self, f"{model}_train_steps")

    @property
    def tuned_models(self) -> list[str]:
        """Models this run searches hyperparameters for (none unless `tune`)."""
        return [m for m in search_space.MODELS
                if self.tune and self.tuning_search_space.get(m)]

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

    def fairness_limits(self, model: str) -> dict[str, float]:
        """{config field: limit} of the fairness bounds on `model` (retrieval, ranking)."""
        from pipelines.training.fairness import BOUNDS  # pandas and fairlearn: import late
        return {b.field: getattr(self, b.field) for b in BOUNDS if b.model == model}


def add_arguments(parser, workdir_help: str, training_set_help: str,
                  required: bool = False) -> None:
    """The options every command that loads a PipelineConfig takes."""
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--workdir", required=required, help=workdir_help)
    parser.add_argument("--training-set", required=required, help=training_set_help)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set ranking_train_steps=50")


def from_arguments(args) -> PipelineConfig:
    """--config (or pipeline.yaml), then RECSYS_PIPELINE_* variables, then --workdir,
    --training-set and --set. Raises config_lib.ConfigError naming the field."""
    overrides = config_lib.parse_overrides(args.set)
    if args.workdir:
        overrides["workdir"] = args.workdir
    if args.training_set:
        overrides["training_set"] = args.training_set
    return config_lib.load(PipelineConfig, args.config, env_prefix="RECSYS_PIPELINE",
                           overrides=overrides, overrides_name="command line")
