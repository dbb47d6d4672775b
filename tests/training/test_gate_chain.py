"""The gates compose: each Pusher obeys its model's fairness gate, which follows the
model's other gates; bad bounds are refused naming the field; the model card says what
was pushed and why not."""
import json

import pytest

from libs import config as config_lib
from pipelines.training import compile as compile_module
from pipelines.training import model_card
from pipelines.training.pipeline import create_pipeline
from tests.training.test_compile import IMAGE, load


def producer(task: dict, key: str) -> str:
    return task["inputs"]["artifacts"][key]["taskOutputArtifact"]["producerTask"]


def test_pushers_and_gates_form_one_chain_per_model(tmp_path):
    config = load(workdir="gs://b/recsys", training_set="gs://b/recsys/sets/span-7")
    spec = json.loads(compile_module.compile_pipeline(config, IMAGE, tmp_path / "p.json")
                      .read_text())["pipelineSpec"]
    tasks = spec["root"]["dag"]["tasks"]
    assert producer(tasks["retrieval_fairness"], "upstream_blessing") == "retrieval_evaluator"
    assert producer(tasks["ranking_baseline_gate"], "upstream_blessing") == \
        "ranking_evaluator"
    assert producer(tasks["ranking_fairness"], "upstream_blessing") == \
        "ranking_baseline_gate"
    for name in ("retrieval", "ranking"):
        assert producer(tasks[f"{name}_pusher"], "model_blessing") == f"{name}_fairness"
        assert producer(tasks[f"{name}_model_card"], "pushed_model") == f"{name}_pusher"
    limits = tasks["retrieval_fairness"]["inputs"]["parameters"]["limits"]
    assert json.loads(limits["runtimeValue"]["constantValue"]["stringValue"]) == \
        config.fairness_limits("retrieval")


def test_last_blessed_model_resolvers_read_the_fairness_gates():
    pipeline = create_pipeline(load(), local=False)
    resolvers = {c.id: c for c in pipeline.components if c.id.startswith("latest_blessed")}
    for name in ("retrieval", "ranking"):
        channels = resolvers[f"latest_blessed_{name}"].raw_inputs
        assert channels["model_blessing"].producer_component_id == f"{name}_fairness"
        assert channels["model"].producer_component_id == f"{name}_trainer"


@pytest.mark.parametrize("field,value", [
    ("fairness_max_recall_difference", 1.5), ("fairness_min_recall_ratio", -0.1),
    ("fairness_max_genre_gap", 2), ("fairness_head_fraction", 1.2),
    ("fairness_max_rmse_difference", -1), ("fairness_min_group_size", 0),
    ("fairness_max_rmse_excess_over_item_mean", -0.1),
    ("ranking_min_rmse_gain_over_item_mean", -0.5)])
def test_bad_bounds_are_refused_naming_the_field(field, value):
    with pytest.raises(config_lib.ConfigError, match=field):
        load(**{field: value})


def test_model_card_of_a_refused_model_says_why_and_what_data():
    fairness = {"min_group_size": 30, "limits": {"fairness_max_rmse_difference": 0.1},
                "reasons": ["ranking_baseline_gate: RMSE 1.04 is not below 1.03",
                            "fairness: gender: rmse differs by 0.2"],
                "groups": {"gender": {"F": {"size": 5698.0, "rmse": 1.08},
                                      "M": {"size": 14303.0, "rmse": 1.01}}}}
    text = model_card.markdown(
        "ranking", None, "", False,
        {"span": 7, "content_sha256": "abc", "split": "time", "train_rows": 8, "eval_rows": 2},
        {"rmse": 1.04}, {"gender = F": {"rmse": 1.08}}, fairness, "/r/report.html")
    assert "**Not pushed**" in text and "- ranking_baseline_gate: RMSE 1.04" in text
    assert "| training set sha256 | `abc` |" in text and "| train / eval ratings | 8 / 2 |" \
        in text
    assert "bounds broken: fairness: gender: rmse differs by 0.2" in text
    assert "| F | 5,698 | 1.08 |" in text and "| gender = F | 1.08 |" in text
    assert "## Intended use" in text and "## Limitations" in text


def test_model_card_of_a_pushed_model_names_its_version():
    text = model_card.markdown("retrieval", "17", "/repo/retrieval/17", True, {}, {}, {},
                               {"reasons": []}, "/r/report.html")
    assert text.startswith("# Model card: retrieval version 17")
    assert "Pushed as version 17 to `/repo/retrieval/17`" in text
    assert "every bound holds" in text


def test_tfma_slices_by_age_group_but_gates_overall_and_by_gender():
    from pipelines.training.pipeline import _ranking_eval_config

    eval_config = _ranking_eval_config(load())
    assert [list(s.feature_keys) for s in eval_config.slicing_specs] == [
        [], ["gender"], ["age_group"]]
    rmse = eval_config.metrics_specs[0].metrics[0]
    gated = [list(s.feature_keys) for t in rmse.per_slice_thresholds for s in t.slicing_specs]
    assert gated == [[], ["gender"]]
