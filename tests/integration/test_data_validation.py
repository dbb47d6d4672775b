"""Data that breaks the schema stops the pipeline before training, and says why; every
run is traceable to the training set it read."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess

import pandas as pd

from pipelines.data import prepare
from tests.conftest import ROOT, TRAINING_PYTHON
from tests.integration.conftest import SMALL_RUN
from tests.integration.helpers import lineage
from tools.stack import service_env


def test_unseen_category_in_new_data_stops_the_run(trained, tmp_path):
    """What slips past the feature job (here a training set edited by hand) still meets
    TFDV's schema, learned from the training split."""
    workdir, _ = trained
    source = prepare.newest_training_set(workdir / "data" / "training_sets")
    rows = pd.read_parquet(source / "ratings.parquet")
    last = int(rows.timestamp.max())
    # a new user whose occupation training has never seen rates items after everyone else
    newcomer = rows.iloc[:2000].assign(user_id="99999", occupation="astronaut",
                                       timestamp=range(last + 1, last + 2001))
    edited = tmp_path / f"span-{last + 2000}"
    shutil.copytree(source, edited)
    pd.concat([rows, newcomer]).to_parquet(edited / "ratings.parquet", index=False)
    snapshot = json.loads((edited / "snapshot.json").read_text())
    (edited / "snapshot.json").write_text(json.dumps({**snapshot, "span": last + 2000}))

    run_dir = tmp_path / "work"
    command = [str(TRAINING_PYTHON), "-m", "pipelines.training.run", "--training-set",
               str(edited), "--workdir", str(run_dir)]
    for override in SMALL_RUN:
        command += ["--set", override]
    result = subprocess.run(command, cwd=ROOT, env=service_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1
    assert "DataAnomaliesError" in result.stderr and "occupation" in result.stderr
    assert "Traceback" not in result.stderr.split("error: the pipeline stopped")[-1]
    assert not (run_dir / "model_repo").exists(), "models were pushed from bad data"


def test_ml_metadata_records_the_span_of_the_training_set_a_model_came_from(trained):
    workdir, summary = trained
    with sqlite3.connect(workdir / "metadata.sqlite") as db:
        spans = {row[0] for row in db.execute(
            "SELECT p.int_value FROM ArtifactProperty p JOIN Artifact a ON a.id = p.artifact_id"
            " JOIN Type t ON t.id = a.type_id WHERE t.name = 'Examples' AND p.name = 'span'")}
    assert spans == {summary["snapshot"]["span"]}
    assert summary["snapshot"]["content_sha256"] == json.loads(
        (prepare.newest_training_set(workdir / "data" / "training_sets")
         / "snapshot.json").read_text())["content_sha256"]


def test_lineage_cli_traces_a_pushed_model_to_its_data_and_lists_runs(trained):
    workdir, summary = trained
    result = lineage(workdir, "model", "ranking")
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout)
    assert int(found["version"]) == summary["ranking"]["serving_version"]
    assert found["data"]["span"] == summary["snapshot"]["span"]
    assert found["data"]["training_set_sha256"] == summary["snapshot"]["content_sha256"]
    assert found["blessing"]["blessed"] == 1 and "root_mean_squared_error" in \
        found["evaluation"]
    assert found["trainer"]["train_args"]["num_steps"] == 80  # SMALL_RUN
    runs = lineage(workdir, "runs")
    assert runs.returncode == 0 and f"ranking v{found['version']}" in runs.stdout
    missing = lineage(workdir, "model", "retrieval", "12345")
    assert missing.returncode == 2 and "no pushed retrieval model version 12345" in \
        missing.stderr
