"""Hyperparameter search: the configured space is checked at start-up naming the field,
the search is bounded, and a Trainer's hyperparameters merge in one order (defaults <
tuned < explicit). The real search runs in tests/integration/test_tuning.py."""
import json
import os
import time
from types import SimpleNamespace

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2

import keras_tuner  # noqa: E402
import pytest  # noqa: E402

from libs import config as config_lib  # noqa: E402
from pipelines.training.config import PipelineConfig  # noqa: E402
from pipelines.training.models import (  # noqa: E402
    hyperparameters, ranking, retrieval, tuning)
from tests.conftest import ROOT  # noqa: E402


def load(**overrides) -> PipelineConfig:
    config = config_lib.load(PipelineConfig, ROOT / "pipelines/training/pipeline.yaml",
                             overrides=overrides, overrides_name="test")
    tuning.check_names(config.hyperparameters, config.tuning_search_space)
    return config


def test_the_default_search_space_is_valid_for_both_models():
    config = load(tune=True)
    assert config.tuned_models == ["retrieval", "ranking"]
    assert load().tuned_models == []  # tuning is off by default: `make train` stays fast


@pytest.mark.parametrize("space,field", [
    ({"ranking": {"dropot": {"min": 0.1, "max": 0.5}}}, "tuning_search_space.ranking.dropot"),
    ({"ranking": {"dropout": {"min": 0.5, "max": 0.1}}}, "tuning_search_space.ranking.dropout"),
    ({"ranking": {"dropout": {"min": 0.1}}}, "tuning_search_space.ranking.dropout"),
    ({"ranking": {"dropout": {"choices": [0.1], "min": 0.1, "max": 0.5}}},
     "tuning_search_space.ranking.dropout"),
    ({"ranking": {"l2": {"min": 0, "max": 0.01, "log": True}}},
     "tuning_search_space.ranking.l2.min"),
    ({"ranking": {"hidden_units": {"min": 32, "max": 128}}},
     "tuning_search_space.ranking.hidden_units"),
    ({"ranking": {"hidden_units": {"choices": [64, 128]}}},
     "tuning_search_space.ranking.hidden_units.choices"),
    ({"retrieval": {"embedding_dim": {"min": 8.5, "max": 64}}},
     "tuning_search_space.retrieval.embedding_dim"),
    ({"retrieval": {"optimizer": {"min": 0.1, "max": 1.0}}},
     "tuning_search_space.retrieval.optimizer"),
    ({"rank": {"dropout": {"choices": [0.1]}}}, "tuning_search_space"),
])
def test_a_bad_search_space_is_refused_naming_the_field(space, field):
    with pytest.raises(ValueError, match=f"field '{field}'"):
        load(tuning_search_space=space)


def test_bad_tuning_settings_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="field 'tuning_max_trials'"):
        load(tuning_max_trials=0)
    with pytest.raises(ValueError, match="field 'hyperparameters.ranking.dropout'"):
        load(tune=True, hyperparameters={"ranking": {"dropout": 0.2}})
    with pytest.raises(ValueError, match="field 'hyperparameters.ranking.dropuot'"):
        load(hyperparameters={"ranking": {"dropuot": 0.2}})
    with pytest.raises(ValueError, match="field 'tune'"):
        load(tune=True, tuning_search_space={})


def test_the_search_space_becomes_keras_tuner_hyperparameters_of_the_models_types():
    config = load()
    space = tuning.keras_space(ranking.DEFAULTS, {
        "dropout": {"choices": [], "min": 0, "max": 1, "step": None, "log": False},
        "hidden_units": {"choices": [[128, 64], [64]], "min": None, "max": None,
                         "step": None, "log": False}})
    kinds = {hp.name: type(hp).__name__ for hp in space.space}
    assert kinds == {"dropout": "Float", "hidden_units": "Choice"}
    decoded = hyperparameters.decode(ranking.DEFAULTS, {"hidden_units": space.values[
        "hidden_units"]})
    assert decoded["hidden_units"] in ([128, 64], [64])
    retrieval_space = tuning.keras_space(retrieval.DEFAULTS, {
        "embedding_dim": {"choices": [], "min": 8, "max": 64, "step": 8, "log": False}})
    assert type(retrieval_space.space[0]).__name__ == "Int"
    assert config.tuning_search_space["ranking"]["learning_rate"].log


def fn_args(tmp_path, tuned=None, explicit=None):
    return SimpleNamespace(
        hyperparameters={"space": [], "values": tuned} if tuned is not None else None,
        custom_config={"catalog": "items.parquet", "ranking": explicit or {}},
        model_run_dir=str(tmp_path / "model_run"))


def test_defaults_then_tuned_then_explicit_and_the_merge_is_recorded(tmp_path):
    args = fn_args(tmp_path, tuned={"learning_rate": 0.02, "dropout": 0.1,
                                    "hidden_units": "[64]", "retired": 3},
                   explicit={"dropout": 0.45})
    hp = hyperparameters.for_training(ranking.DEFAULTS, args, "ranking")
    assert hp == {**ranking.DEFAULTS, "learning_rate": 0.02, "hidden_units": [64],
                  "dropout": 0.45}
    record = json.loads((tmp_path / "model_run" / hyperparameters.RECORD_FILE).read_text())
    assert record["values"] == hp
    assert record["tuned"] == {"learning_rate": 0.02, "dropout": 0.1, "hidden_units": [64]}
    assert record["explicit"] == {"dropout": 0.45}
    # no search yet (the resolver found nothing): the defaults
    assert hyperparameters.for_training(ranking.DEFAULTS, fn_args(tmp_path),
                                        "ranking") == ranking.DEFAULTS


def oracle(max_trials=3, max_seconds=0.0):
    space = keras_tuner.HyperParameters()
    space.Float("learning_rate", 0.001, 0.1, sampling="log")
    return tuning.BudgetedRandomSearch(
        max_seconds=max_seconds, objective=keras_tuner.Objective("val_loss", "min"),
        max_trials=max_trials, seed=1, hyperparameters=space)


def test_the_first_trial_tries_the_current_values_where_the_space_holds_them():
    current = {**ranking.DEFAULTS, "dropout": 0.3, "l2": 0.0005}
    space = tuning.keras_space(current, {
        "dropout": {"choices": [], "min": 0.1, "max": 0.5, "step": None, "log": False},
        "l2": {"choices": [0.0001, 0.002], "min": None, "max": None, "step": None,
               "log": False},
        "hidden_units": {"choices": [[32], [128, 64]], "min": None, "max": None,
                         "step": None, "log": False}})
    search = tuning.BudgetedRandomSearch(
        max_seconds=0, objective=keras_tuner.Objective("val_loss", "min"), max_trials=3,
        seed=1, hyperparameters=space)
    first = search.populate_space("0")["values"]
    # 0.0005 is not among l2's choices: the first choice stands in for it
    assert first == {"dropout": 0.3, "l2": 0.0001, "hidden_units": "[128, 64]"}


def test_no_new_trial_starts_once_the_time_budget_is_spent():
    search = oracle(max_seconds=0.5)
    assert search.populate_space("0")["status"] == "RUNNING"
    time.sleep(0.6)
    assert search.populate_space("1")["status"] == "STOPPED" and search.out_of_time


def test_a_search_whose_trials_all_fail_fails_saying_why(tmp_path, capsys):
    tuner = tuning.ModelSearch("ranking", {}, oracle(max_trials=2),
                               directory=str(tmp_path), project_name="p", overwrite=True)
    with pytest.raises(RuntimeError, match="tuning ranking: no trial completed; the last "
                                           "failed with: AttributeError"):
        tuner.search(fn_args=None, tf_transform_output=None)  # build() cannot read data
    progress = capsys.readouterr().out
    assert "trial 1/2 FAILED: AttributeError" in progress and "trial 2/2 FAILED" in progress


def test_a_plain_run_resolves_the_latest_search_and_a_tuning_run_searches(tmp_path):
    from pipelines.training.pipeline import create_pipeline

    base = {"workdir": str(tmp_path), "training_set": str(tmp_path / "span-1")}
    plain = {c.id: c for c in create_pipeline(load(**base)).components}
    assert {"latest_tuned_retrieval", "latest_tuned_ranking"} <= set(plain)
    assert not {"retrieval_tuner", "ranking_tuner"} & set(plain)
    assert "latest_tuned_ranking" in {n.id for n in plain["ranking_trainer"].upstream_nodes}
    tuned = {c.id: c for c in create_pipeline(load(**base, tune=True, tuning_search_space={
        "ranking": {"dropout": {"choices": [0.1, 0.2]}}})).components}
    assert "ranking_tuner" in tuned and "retrieval_tuner" not in tuned
    # trials as long as the Trainer's unless tuning_steps_per_trial says otherwise
    train_args = json.loads(tuned["ranking_tuner"].exec_properties["train_args"])
    assert int(train_args["num_steps"]) == load().ranking_train_steps
    assert "latest_tuned_retrieval" in tuned  # the model not searched keeps its last result
    assert "ranking_tuner" in {n.id for n in tuned["ranking_trainer"].upstream_nodes}
