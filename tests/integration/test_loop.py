"""The loop's controller drives the real pipeline: a drift report retrains, the versions
the run pushed are in the audit log, and the lineage CLI says which report caused them."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time

from pipelines.data import synthetic
from tests.conftest import ROOT, TRAINING_PYTHON
from tests.integration.conftest import SMALL_DATA, SMALL_RUN, build_features
from tests.integration.helpers import lineage
from tools.stack import service_env


def test_a_drift_report_retrains_through_the_pipeline_and_the_lineage_says_why(tmp_path):
    workdir, loop = tmp_path / "work", tmp_path / "loop"
    build_features(workdir, synthetic.generate(*SMALL_DATA))
    drift = tmp_path / "drift.json"
    drift.write_text(json.dumps({
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "drift": True,
        "results": [{"feature": "age", "check": "features", "detected": True}]}))
    command = [str(TRAINING_PYTHON), "-m", "pipelines.training.run", "--workdir",
               str(workdir), *[a for o in SMALL_RUN for a in ("--set", o)]]
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.loop.controller", "--dir", str(loop), "tick",
         "--workdir", str(workdir), "--drift-report", str(drift), "--retrain-days", "0",
         "--retrain-command", shlex.join(command)],
        cwd=ROOT, env={**service_env(), "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True,
        text=True, timeout=900)
    log = (loop / "retrain.log").read_text()[-3000:] if (loop / "retrain.log").exists() else ""
    assert done.returncode == 0, done.stdout + done.stderr + log
    assert "retraining: drift in age (features)" in done.stdout
    retrained = [json.loads(line) for line in (loop / "audit.jsonl").read_text().splitlines()]
    assert [s["action"] for s in retrained] == ["retrain", "retrained"]
    pushed = retrained[-1]["pushed"]
    assert set(pushed) == {"retrieval", "ranking"}  # a first run: both pushed
    for model, version in pushed.items():
        assert (workdir / "model_repo" / model / str(version) / "saved_model.pb").is_file()
    found = lineage(workdir, "model", "ranking", "--loop-dir", str(loop))
    assert found.returncode == 0, found.stderr[-2000:]
    why = json.loads(found.stdout)["retrained_by_loop"]
    [trigger] = why["triggers"]
    assert trigger["kind"] == "drift" and trigger["reason"] == "drift in age (features)"
    assert trigger["report"] == str(drift) and trigger["detected_at"] <= why["started"]
    assert why["training_set"] == retrained[-1]["training_set"]
