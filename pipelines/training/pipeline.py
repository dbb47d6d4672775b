"""The TFX pipeline: wires components, nothing else.

ExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> DataValidationGate
           -> Transform -> retrieval Trainer -> RetrievalEvaluator -> FairnessGate
                                                -> Pusher -> ModelCardWriter
                        -> ranking Trainer   -> Evaluator (TFMA) -> RankingBaselineGate
                                                -> FairnessGate -> Pusher -> ModelCardWriter
Each Trainer's hyperparameters come from a Tuner (a tuning run) or from the latest
Tuner's result in ML Metadata (any other run).
Each evaluator compares the new model with the last blessed one of its kind and
refuses to bless a worse one; each later gate blesses only what the gate before it
blessed, and the Pushers and the last-blessed-model resolvers read the last gate's
blessing, so only a model that passed every gate reaches the model repository.
"""
from __future__ import annotations

import dataclasses
import json
import os

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from libs import feature_spec
from pipelines.training import code_version
from pipelines.training.components.data_gate import DataValidationGate
from pipelines.training.components.fairness_gate import FairnessGate
from pipelines.training.components.model_card_writer import ModelCardWriter
from pipelines.training.components.ranking_baseline_gate import RankingBaselineGate
from pipelines.training.components.retrieval_evaluator import RetrievalEvaluator
from pipelines.training.config import PipelineConfig
from pipelines.training.models import ranking

MODELS = "pipelines.training.models"
TUNED = "best_hyperparameters"  # the Tuner's output, and the resolver's


def _ranking_eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    overall, gender = tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=["gender"])
    no_worse = tfma.GenericChangeThreshold(direction=tfma.MetricDirection.LOWER_IS_BETTER,
                                           absolute={"value": config.ranking_rmse_tolerance})
    rmse = tfma.MetricConfig(
        class_name="RootMeanSquaredError",
        # Only the whole split has an absolute bound: a group's ratings can be harder to
        # predict for any model (at the replay's 0.7 cut, women's RMSE 1.359 against the
        # item-mean baseline's 1.356), which the fairness gate judges against the baseline.
        # Age groups are reported only: some hold a few hundred ratings, whose RMSE moves
        # by more than the tolerance between two retrainings.
        per_slice_thresholds=[
            tfma.PerSliceMetricThreshold(slicing_specs=[overall], threshold=tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(
                    upper_bound={"value": config.ranking_max_rmse}),
                change_threshold=no_worse)),
            tfma.PerSliceMetricThreshold(slicing_specs=[gender], threshold=tfma.MetricThreshold(
                change_threshold=no_worse))])
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_examples",
                                    label_key=feature_spec.LABEL,
                                    prediction_key=ranking.OUTPUT_KEY)],
        slicing_specs=[overall, gender, tfma.SlicingSpec(feature_keys=["age_group"])],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            rmse, tfma.MetricConfig(class_name="MeanAbsoluteError"),
            tfma.MetricConfig(class_name="ExampleCount")])])


def _latest_blessed(trainer_id: str, evaluator_id: str, resolver_id: str):
    return tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model,
                              producer_component_id=trainer_id, output_key="model"),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                       producer_component_id=evaluator_id,
                                       output_key="blessing"),
    ).with_id(resolver_id)


def _pusher(model, blessing, model_repo: str, name: str):
    return tfx.components.Pusher(
        model=model, model_blessing=blessing,
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=os.path.join(model_repo, name))),
    ).with_id(f"{name}_pusher")


def _tuned_hyperparameters(config: PipelineConfig, name: str, transform, schema):
    """Where a Trainer's hyperparameters come from: this run's Tuner when the run tunes
    the model, else the newest best_hyperparameters any earlier Tuner recorded in ML
    Metadata (none before the first search: the Trainer uses its defaults). Either way
    its output is `outputs[TUNED]`."""
    if name in config.tuned_models:
        return tfx.components.Tuner(
            tuner_fn=f"{MODELS}.tuning.tuner_fn",
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema,
            train_args=tfx.proto.TrainArgs(num_steps=config.steps_per_trial(name)),
            eval_args=tfx.proto.EvalArgs(num_steps=config.eval_steps),
            custom_config={"model": name, name: config.hyperparameters.get(name, {}),
                           "catalog": config.catalog_file, "seed": config.seed,
                           "tuning": {
                               "search_space": {
                                   k: dataclasses.asdict(v)
                                   for k, v in config.tuning_search_space[name].items()},
                               "max_trials": config.tuning_max_trials,
                               "max_minutes": config.tuning_max_minutes,
                               "retrieval_k": config.retrieval_k}},
        ).with_id(f"{name}_tuner")
    return tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        best_hyperparameters=tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.HyperParameters,
            producer_component_id=f"{name}_tuner", output_key=TUNED),
    ).with_id(f"latest_tuned_{name}")


def create_pipeline(config: PipelineConfig, local: bool = True) -> tfx.dsl.Pipeline:
    """`local`: ML Metadata in SQLite under the workdir; otherwise the orchestrator's
    (Kubeflow Pipelines, Vertex AI) own."""
    example_gen = tfx.components.ImportExampleGen(
        input_base=config.examples_dir,
        # the newest span: each is one training set from the feature store, and the
        # span ExampleGen records in ML Metadata traces a model to its data
        input_config=tfx.proto.Input(splits=[
            tfx.proto.Input.Split(name="train", pattern="span-{SPAN}/train/*"),
            tfx.proto.Input.Split(name="eval", pattern="span-{SPAN}/eval/*")]))
    examples = example_gen.outputs["examples"]
    statistics_gen = tfx.components.StatisticsGen(examples=examples)
    # The schema comes from the training (older) data alone, so the validator checks the
    # newest data against what the model was built on.
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True,
        exclude_splits=["eval"])
    schema = schema_gen.outputs["schema"]
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema)
    data_gate = DataValidationGate(anomalies=example_validator.outputs["anomalies"])
    transform = tfx.components.Transform(
        examples=examples, schema=schema,
        preprocessing_fn=f"{MODELS}.preprocessing.preprocessing_fn",
        # Its pre- and post-transform statistics are two more passes over the data that
        # nothing reads: StatisticsGen and the validator already gate the raw data.
        disable_statistics=True)
    transform.add_upstream_node(data_gate)

    code = code_version.describe()  # kept with each Trainer's execution

    def trainer(name: str, steps: int, hyperparameters):
        return tfx.components.Trainer(
            run_fn=f"{MODELS}.{name}.run_fn",
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema,
            hyperparameters=hyperparameters,
            train_args=tfx.proto.TrainArgs(num_steps=steps),
            eval_args=tfx.proto.EvalArgs(num_steps=config.eval_steps),
            custom_config={"catalog": config.catalog_file,
                           name: config.hyperparameters.get(name, {}), "code": code,
                           "seed": config.seed},
        ).with_id(f"{name}_trainer")

    tuning = {name: _tuned_hyperparameters(config, name, transform, schema)
              for name in ("retrieval", "ranking")}
    retrieval_trainer = trainer("retrieval", config.retrieval_train_steps,
                                tuning["retrieval"].outputs[TUNED])
    ranking_trainer = trainer("ranking", config.ranking_train_steps,
                              tuning["ranking"].outputs[TUNED])

    retrieval_baseline = _latest_blessed("retrieval_trainer", "retrieval_fairness",
                                         "latest_blessed_retrieval")
    retrieval_evaluator = RetrievalEvaluator(
        examples=examples, model=retrieval_trainer.outputs["model"],
        baseline_model=retrieval_baseline.outputs["model"],
        k=config.retrieval_k, min_accuracy=config.retrieval_min_accuracy,
        min_ratio_to_popularity=config.retrieval_min_ratio_to_popularity,
        min_recall_ratio_to_popularity=config.retrieval_min_recall_ratio_to_popularity,
        tolerance=config.retrieval_accuracy_tolerance,
        sources_min_ratio_to_popularity=config.sources_min_ratio_to_popularity,
        sources_tolerance=config.sources_ndcg_tolerance,
    ).with_id("retrieval_evaluator")

    ranking_baseline = _latest_blessed("ranking_trainer", "ranking_fairness",
                                       "latest_blessed_ranking")
    ranking_evaluator = tfx.components.Evaluator(
        examples=examples, model=ranking_trainer.outputs["model"],
        baseline_model=ranking_baseline.outputs["model"],
        eval_config=_ranking_eval_config(config),
    ).with_id("ranking_evaluator")

    def fairness_gate(name: str, trainer, upstream, upstream_name: str):
        return FairnessGate(
            examples=examples, model=trainer.outputs["model"],
            upstream_blessing=upstream.outputs["blessing"], model_kind=name,
            limits=json.dumps(config.fairness_limits(name)),
            min_group_size=config.fairness_min_group_size,
            confidence=config.fairness_confidence,
            head_fraction=config.fairness_head_fraction, catalog=config.catalog_file,
            upstream_name=upstream_name,
        ).with_id(f"{name}_fairness")

    retrieval_fairness = fairness_gate("retrieval", retrieval_trainer, retrieval_evaluator,
                                       "retrieval_evaluator")
    ranking_baseline_gate = RankingBaselineGate(
        examples=examples, model=ranking_trainer.outputs["model"],
        upstream_blessing=ranking_evaluator.outputs["blessing"],
        evaluation=ranking_evaluator.outputs["evaluation"],
        min_rmse_gain=config.ranking_min_rmse_gain_over_item_mean,
    ).with_id("ranking_baseline_gate")
    ranking_fairness = fairness_gate("ranking", ranking_trainer, ranking_baseline_gate,
                                     "ranking_baseline_gate")
    retrieval_pusher = _pusher(retrieval_trainer.outputs["model"],
                               retrieval_fairness.outputs["blessing"], config.model_repo,
                               feature_spec.MODEL_NAMES.retrieval)
    ranking_pusher = _pusher(ranking_trainer.outputs["model"],
                             ranking_fairness.outputs["blessing"], config.model_repo,
                             feature_spec.MODEL_NAMES.ranking)

    def model_card(name: str, pusher, gate, fairness, evaluation=None):
        return ModelCardWriter(
            pushed_model=pusher.outputs["pushed_model"], examples=examples,
            gate_blessing=gate.outputs["blessing"], fairness_report=fairness.outputs["report"],
            evaluation=evaluation, model_name=name, examples_dir=config.examples_dir,
        ).with_id(f"{name}_model_card")

    components = [
        example_gen, statistics_gen, schema_gen, example_validator, data_gate, transform,
        tuning["retrieval"], tuning["ranking"],
        retrieval_trainer, retrieval_baseline, retrieval_evaluator, retrieval_fairness,
        retrieval_pusher,
        model_card("retrieval", retrieval_pusher, retrieval_evaluator, retrieval_fairness),
        ranking_trainer, ranking_baseline, ranking_evaluator, ranking_baseline_gate,
        ranking_fairness, ranking_pusher,
        model_card("ranking", ranking_pusher, ranking_baseline_gate, ranking_fairness,
                   ranking_evaluator.outputs["evaluation"]),
    ]
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        metadata_connection_config=tfx.orchestration.metadata
        .sqlite_metadata_connection_config(config.metadata_path) if local else None,
        beam_pipeline_args=config.beam_args,
        enable_cache=False,
    )
