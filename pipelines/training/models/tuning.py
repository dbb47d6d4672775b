"""Hyperparameter search for either model: the TFX Tuner's `tuner_fn`.

KerasTuner random search over the configured space (search_space.py) within a budget: at
most `max_trials` trials of `train_steps` steps each, and no new trial once
`max_minutes` have passed. A trial builds the model with its module's own `build`, so
the search trains what run_fn trains. One line of progress per trial. The Tuner writes
the best values as its `best_hyperparameters` artifact (ML Metadata); the Trainer reads
them through models/hyperparameters.py.
"""
from __future__ import annotations

import time

import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from keras_tuner.engine import base_tuner, trial as trial_module
from tfx import v1 as tfx

from libs.feature_spec import transformed_name
from pipelines.training import evaluation
from pipelines.training.models import (autograph, hyperparameters, inputs, ranking,
                                       retrieval, seeding)
from pipelines.training.search_space import Dimension

MODELS = {"retrieval": retrieval, "ranking": ranking}
# What each search optimizes on the eval split: for retrieval, top-k accuracy over the
# whole catalog, the metric its gate checks (its validation loss, an in-batch softmax,
# changes with the batch size and picked models the gate then refused); for ranking,
# RMSE, the metric its gate checks.
OBJECTIVES = {"retrieval": keras_tuner.Objective("val_top_k_accuracy", "max"),
              "ranking": keras_tuner.Objective("val_root_mean_squared_error", "min")}


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return type(value).__name__
    return "list" if isinstance(value, list) else "str"


def _check_dimension(defaults: dict, where: str, name: str, dimension: Dimension) -> None:
    kind = _kind(defaults[name])
    if dimension.choices:
        wrong = [v for v in dimension.choices
                 if _kind(v) != kind and not (kind == "float" and _kind(v) == "int")]
        if wrong:
            raise ValueError(f"field '{where}.choices': {name} takes {kind} values "
                             f"(default {defaults[name]!r}), got {wrong[0]!r}")
    elif kind not in ("int", "float"):
        raise ValueError(f"field '{where}': {name} is not a number "
                         f"(default {defaults[name]!r}); give 'choices'")
    elif kind == "int" and not dimension.integer:
        raise ValueError(f"field '{where}': {name} is an integer; 'min', 'max' and 'step' "
                         "must be integers")


def check_names(fixed: dict[str, dict], space: dict[str, dict[str, Dimension]]) -> None:
    """Every configured hyperparameter exists in its model, with values of its type;
    raises ValueError naming the field. Run at start-up (run.py), before any component."""
    for model, values in fixed.items():
        defaults = MODELS[model].DEFAULTS
        for name in values:
            if name not in defaults:
                raise ValueError(f"field 'hyperparameters.{model}.{name}': unknown "
                                 f"hyperparameter; {model} has {', '.join(sorted(defaults))}")
    for model, dimensions in space.items():
        defaults = MODELS[model].DEFAULTS
        for name, dimension in dimensions.items():
            where = f"tuning_search_space.{model}.{name}"
            if name not in defaults:
                raise ValueError(f"field '{where}': unknown hyperparameter; {model} has "
                                 f"{', '.join(sorted(defaults))}")
            _check_dimension(defaults, where, name, dimension)


def keras_space(current: dict, dimensions: dict[str, dict]) -> keras_tuner.HyperParameters:
    """The configured dimensions as KerasTuner hyperparameters of the types of the
    `current` values (integer ranges for integer hyperparameters), each defaulting to
    its current value when that lies in the space."""
    space = keras_tuner.HyperParameters()
    for name, raw in sorted(dimensions.items()):
        dimension = Dimension(**raw)
        sampling = "log" if dimension.log else "linear"
        value = hyperparameters.encode(current[name])
        if dimension.choices:
            choices = [hyperparameters.encode(v) for v in dimension.choices]
            space.Choice(name, choices, default=value if value in choices else None)
            continue
        default = value if dimension.min <= value <= dimension.max else None
        if isinstance(current[name], int):
            space.Int(name, dimension.min, dimension.max, step=dimension.step,
                      sampling=sampling, default=default)
        else:
            space.Float(name, float(dimension.min), float(dimension.max),
                        step=dimension.step, sampling=sampling, default=default)
    return space


def catalog_top_k_accuracy(model, batches, tf_transform_output, catalog_file: str,
                           k: int) -> float:
    """Share of eval ratings whose item is among the retrieval model's top k over every
    catalog item, scored as the RetrievalEvaluator scores (evaluation.top_k_accuracy)."""
    item = transformed_name("item_id")
    raw = inputs.raw_tensors(retrieval.read_catalog(catalog_file))
    catalog = tf_transform_output.transform_features_layer()(inputs.as_column(raw))
    candidates = model.candidate(catalog)
    ids = tf.reshape(catalog[item], [-1])
    top, truth = [], []
    for batch in batches:
        scores = tf.matmul(model.query(batch), candidates, transpose_b=True)
        best = tf.math.top_k(scores, k=min(k, int(ids.shape[0]))).indices
        top += tf.gather(ids, best).numpy().tolist()
        truth += tf.reshape(batch[item], [-1]).numpy().tolist()
    return evaluation.top_k_accuracy(top, truth)


class BudgetedRandomSearch(keras_tuner.oracles.RandomSearchOracle):
    """Random search whose first trial is the space's defaults (the current values), so
    the search shows what the others gain over them; it starts no new trial once
    `max_seconds` have passed (a trial under way finishes)."""

    def __init__(self, max_seconds: float, **kwargs):
        super().__init__(**kwargs)
        self.deadline = time.monotonic() + max_seconds if max_seconds else None
        self.out_of_time = False

    def populate_space(self, trial_id):
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.out_of_time = True
            return {"status": trial_module.TrialStatus.STOPPED, "values": None}
        if not self.trials:
            return {"status": trial_module.TrialStatus.RUNNING,
                    "values": self.hyperparameters.values}
        return super().populate_space(trial_id)


class ModelSearch(base_tuner.BaseTuner):
    """Trains one model per trial, scores it on the eval split, prints progress."""

    def __init__(self, model: str, fixed: dict, oracle, catalog: str = "", k: int = 100,
                 **kwargs):
        super().__init__(oracle=oracle, **kwargs)
        self.model, self.fixed = model, fixed
        self.catalog, self.k = catalog, k  # retrieval's objective: top k over the catalog
        self.oracle.verbose = 0  # KerasTuner's own tables: our one line per trial instead
        self.started = self.trial_started = time.monotonic()

    def _print(self, message: str) -> None:
        print(f"  tuning {self.model}: {message}", flush=True)

    def run_trial(self, trial, fn_args, tf_transform_output):
        tf.keras.backend.clear_session()  # free the previous trial's graph
        module = MODELS[self.model]
        hp = {**module.DEFAULTS, **self.fixed,
              **hyperparameters.decode(module.DEFAULTS, trial.hyperparameters.values)}
        model, train, eval_data = module.build(hp, fn_args, tf_transform_output)
        eval_batches = eval_data.take(fn_args.eval_steps)
        history = model.fit(train, steps_per_epoch=fn_args.train_steps, epochs=1,
                            validation_data=eval_batches, verbose=0)
        metrics = {name: values[-1] for name, values in history.history.items()}
        if self.model == "retrieval":
            metrics["val_top_k_accuracy"] = catalog_top_k_accuracy(
                model, eval_batches, tf_transform_output, self.catalog, self.k)
        return {self.oracle.objective.name: metrics[self.oracle.objective.name]}

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self.trial_started = time.monotonic()

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        number = len(self.oracle.trials)
        values = " ".join(f"{k}={_short(v)}" for k, v in trial.hyperparameters.values.items())
        if trial.status == trial_module.TrialStatus.COMPLETED:
            best = self.oracle.get_best_trials(1)[0].score
            outcome = f"{self.oracle.objective.name} {trial.score:.4f} (best {best:.4f})"
        else:  # KerasTuner goes on with the next trial; say why this one failed
            outcome = "FAILED: " + _last_line(trial.message)
        current = " (current values)" if number == 1 else ""
        self._print(f"trial {number}/{self.oracle.max_trials} {outcome} "
                    f"{time.monotonic() - self.trial_started:5.1f}s  {values}{current}")

    def on_search_end(self):
        super().on_search_end()
        if not any(t.status == trial_module.TrialStatus.COMPLETED
                   for t in self.oracle.trials.values()):
            # no best hyperparameters to record: fail the run rather than record a guess
            last = [t.message for t in self.oracle.trials.values() if t.message][-1:]
            raise RuntimeError(f"tuning {self.model}: no trial completed"
                               + (f"; the last failed with: {_last_line(last[0])}"
                                  if last else ""))

    def search_space_summary(self, extended=False):
        self._print(f"up to {self.oracle.max_trials} trials, "
                    f"{self.oracle.objective.direction}imizing "
                    f"{self.oracle.objective.name}; space: " + ", ".join(
                        f"{hp.name} {_describe(hp)}" for hp in self.oracle.get_space().space))

    def results_summary(self, num_trials=1):
        done = [t for t in self.oracle.trials.values()
                if t.status == trial_module.TrialStatus.COMPLETED]
        best = self.oracle.get_best_trials(1)[0]
        stop = " (time budget reached)" if getattr(self.oracle, "out_of_time", False) else ""
        self._print(f"{len(done)} trials in {time.monotonic() - self.started:.0f}s{stop}; "
                    f"best {self.oracle.objective.name} {best.score:.4f}: "
                    + " ".join(f"{k}={_short(v)}" for k, v in best.hyperparameters.values.items()))


def _last_line(message: str | None) -> str:
    """The exception line of a failed trial's traceback."""
    lines = (message or "").strip().splitlines()
    return lines[-1] if lines else "no message"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _describe(hp) -> str:
    config = hp.get_config()
    if "values" in config:
        return "{" + ", ".join(map(str, config["values"])) + "}"
    return f"[{config['min_value']}, {config['max_value']}] {config.get('sampling', '')}"


def tuner_fn(fn_args) -> tfx.components.TunerFnResult:
    """custom_config: model (retrieval or ranking), catalog (the items file), the run's
    seed, tuning (search_space, max_trials, max_minutes, retrieval_k) and the model's
    explicit hyperparameters under its name."""
    autograph.skip_keras()
    seed = seeding.seed_everything(fn_args)  # the trials' weights, and which points
    model = fn_args.custom_config["model"]
    tuning = fn_args.custom_config["tuning"]
    fixed = hyperparameters.explicit_values(fn_args, model)
    oracle = BudgetedRandomSearch(
        max_seconds=60 * tuning["max_minutes"], objective=OBJECTIVES[model],
        max_trials=tuning["max_trials"], seed=seed,
        hyperparameters=keras_space({**MODELS[model].DEFAULTS, **fixed},
                                    tuning["search_space"]),
        allow_new_entries=False, tune_new_entries=False)
    tuner = ModelSearch(model, fixed, oracle, catalog=fn_args.custom_config["catalog"],
                        k=tuning["retrieval_k"],
                        directory=fn_args.working_dir, project_name=f"{model}_search",
                        overwrite=True)
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={
        "fn_args": fn_args,
        "tf_transform_output": tft.TFTransformOutput(fn_args.transform_graph_path)})
