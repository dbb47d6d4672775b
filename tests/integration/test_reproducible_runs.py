"""The same data, config and seed give the same models: a second run of the pipeline on
the suite's training set, in a workdir of its own, reproduces the first run's metrics."""
from __future__ import annotations

import shutil

from tests.integration.conftest import run_pipeline

# what depends on the runs before (the gates' baselines) or on when it ran
NOT_THE_MODEL = ("serving_version",)


def metrics(summary: dict) -> dict[str, float]:
    return {f"{model}.{name}": float(value)
            for model in ("retrieval", "ranking")
            for name, value in summary[model].items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            and name not in NOT_THE_MODEL and not name.endswith("_diff")}


def test_the_same_training_set_config_and_seed_give_the_same_metrics(trained, tmp_path):
    source, first = trained
    workdir = tmp_path / "again"
    shutil.copytree(source / "data" / "training_sets", workdir / "data" / "training_sets")
    second = run_pipeline(workdir)
    assert second["snapshot"]["content_sha256"] == first["snapshot"]["content_sha256"]
    before, after = metrics(first), metrics(second)
    assert before.keys() == after.keys() and len(before) > 20
    differences = {name: abs(before[name] - after[name]) for name in before}
    worst = max(differences, key=differences.get)
    assert differences[worst] <= 1e-6, (worst, before[worst], after[worst])
    print(f"largest difference between two runs: {differences[worst]:.3g} ({worst}) over "
          f"{len(before)} metrics")
