"""Hyperparameter search through the real pipeline: a tuning run records the best
hyperparameters in ML Metadata, and the next plain run trains with them (explicit config
still wins); the lineage CLI traces a model's hyperparameters to that search."""
from __future__ import annotations

import json
import math
import shutil
import subprocess

from tests.conftest import ROOT, TRAINING_PYTHON
from tests.integration.conftest import WITHOUT_SOURCES, run_pipeline
from tools.stack import service_env

TINY_SEARCH = ["tune=true", "tuning_max_trials=2", "tuning_steps_per_trial=10"]
# Not what this test is about: with the gates open every model is pushed, so the newest
# pushed version is the plain run's.
GATES_OPEN = ["retrieval_min_accuracy=0", "retrieval_min_ratio_to_popularity=0",
              "retrieval_min_recall_ratio_to_popularity=0", "retrieval_accuracy_tolerance=1",
              "ranking_max_rmse=100", "ranking_rmse_tolerance=100"]
MODELS = ("retrieval", "ranking")


def as_trained(values: dict) -> dict:
    """KerasTuner's values as the Trainer uses them (list values travel as JSON)."""
    return {k: json.loads(v) if isinstance(v, str) and v.startswith("[") else v
            for k, v in values.items()}


def lineage(workdir, *args) -> dict | list:
    result = subprocess.run([str(TRAINING_PYTHON), "-m", "pipelines.training.lineage",
                             "--workdir", str(workdir), "--json", *args], cwd=ROOT,
                            env=service_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_the_best_hyperparameters_of_a_search_train_the_next_plain_run(trained, tmp_path):
    source, _ = trained
    workdir = tmp_path / "work"
    shutil.copytree(source / "data" / "training_sets", workdir / "data" / "training_sets")

    tuning = run_pipeline(workdir, *TINY_SEARCH, *GATES_OPEN, WITHOUT_SOURCES)
    best = {}
    for model in MODELS:
        used = tuning[model]["hyperparameters"]
        trials = used["search"]["trials"]
        assert len(trials) == 2 and all(math.isfinite(t["score"]) for t in trials)
        pick = max if used["search"]["direction"] == "max" else min
        winner = pick(trials, key=lambda t: t["score"])
        best[model] = as_trained({k: v for k, v in winner.items()
                                  if k not in ("trial_id", "score")})
        assert used["tuned"] == best[model]  # this run's Trainer already uses them
        assert tuning["component_seconds"][f"{model}_tuner"] > 0

    plain = run_pipeline(workdir, *GATES_OPEN, "hyperparameters={ranking: {dropout: 0.25}, "
                                                 "retrieval: {candidate_sources: false}}")
    for model in MODELS:
        used = plain[model]["hyperparameters"]
        assert "search" not in used and f"{model}_tuner" not in plain["component_seconds"]
        assert used["tuned"] == best[model]
        explicit = {"dropout": 0.25} if model == "ranking" else {}
        assert used["values"] == {**used["values"], **best[model], **explicit}
    assert plain["ranking"]["hyperparameters"]["values"]["dropout"] == 0.25

    runs = [run["run"] for run in lineage(workdir, "runs")]
    searches = lineage(workdir, "tuning")
    assert sorted(s["tuner"] for s in searches) == ["ranking_tuner", "retrieval_tuner"]
    assert {s["run"] for s in searches} == {runs[0]}
    ranking = lineage(workdir, "model", "ranking")
    assert int(ranking["version"]) == plain["ranking"]["serving_version"]
    search = ranking["trainer"]["hyperparameters"]["search"]
    assert search["run"] == runs[0] != runs[-1]  # tuned in the first run, trained in the last
    assert as_trained(search["best"]) == best["ranking"]
