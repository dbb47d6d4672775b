"""The fairness gates compose with the other gates: the first run's models pass them and
carry a model card and a fairness report; a model that breaks a configured bound stays
out of the model repository, and the run names the bound."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from libs import version_evaluation
from tests.conftest import ROOT
from tests.integration.helpers import lineage

MODELS = ("retrieval", "ranking")


def test_pushed_models_carry_a_model_card_and_a_fairness_report(trained):
    workdir, summary = trained
    for name in MODELS:
        gate = summary[name]["final_gate"]
        assert gate["blessed"], gate["reasons"]
        report = Path(gate["fairness_report"]).read_text()
        assert "By gender" in report and "By age_group" in report and "<svg" in report
        version = summary[name]["serving_version"]
        card = (workdir / "model_repo" / name / str(version) / "model_card.md").read_text()
        assert card.startswith(f"# Model card: {name} version {version}")
        assert summary["snapshot"]["content_sha256"] in card
        assert "## Fairness across user groups" in card and "### By age_group" in card
        # what the online quality check compares users' later ratings with
        evaluation = version_evaluation.read(workdir / "model_repo" / name / str(version)
                                             / version_evaluation.FILE)
        assert (evaluation["model"], evaluation["version"]) == (name, version)
        assert evaluation["training_set"] == summary["snapshot"]["training_set"]
        if name == "ranking":
            assert set(evaluation["promise"]) == {"rmse"}
            assert 0 < evaluation["promise"]["rmse"] < 4
        elif evaluation["promise"]:  # the candidate sources' blend, when it was built
            assert evaluation["label_days"] == 14
            assert 0 <= evaluation["promise"]["recall_at_10"] <= 1
    ranking = json.loads(lineage(workdir, "model", "ranking").stdout)
    assert ranking["model_card"].endswith(
        f"ranking/{summary['ranking']['serving_version']}/model_card.md")
    assert [g["node"] for g in ranking["gates"]] == [
        "ranking_evaluator", "ranking_baseline_gate", "ranking_fairness"]
    # and the code that trained it: this checkout's commit and lock files
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert ranking["code"]["commit"] == head == summary["code"]["commit"]
    assert ranking["code"]["locks"] == {
        name: hashlib.sha256((ROOT / name).read_bytes()).hexdigest()
        for name in ("requirements/training.lock", "requirements/serving.lock")}


def test_a_model_breaking_a_fairness_bound_is_not_pushed_and_the_run_says_why(refused):
    summary, before, after = refused
    for name, field in (("retrieval", "fairness_max_genre_gap"),
                        ("ranking", "fairness_max_rmse_difference")):
        gate = summary[name]["final_gate"]
        assert not gate["blessed"]
        assert any(r.startswith("fairness: ") and field in r for r in gate["reasons"]), \
            gate["reasons"]
        card = Path(summary[name]["model_card"]).read_text()
        assert "**Not pushed**" in card and field in card
    assert after == before, "a model that broke a fairness bound reached the model repository"
