"""Data that breaks the schema stops the pipeline before training, and says why."""
from __future__ import annotations

import subprocess

from pipelines.data import synthetic
from tests.conftest import ROOT, TRAINING_PYTHON
from tests.integration.conftest import SMALL_RUN
from tools.stack import service_env


def test_unseen_category_in_new_data_stops_the_run(tmp_path):
    data_dir = synthetic.write_movielens_format(
        synthetic.generate(300, 400, 20_000), tmp_path / "ml")
    last = max(int(line.split("\t")[3]) for line in (data_dir / "u.data").read_text()
               .splitlines())
    # a new user whose occupation training has never seen rates items after everyone else
    with open(data_dir / "u.user", "a") as f:
        f.write("99999|30|F|astronaut|12345\n")
    with open(data_dir / "u.data", "a") as f:
        for item in range(1, 2001):
            f.write(f"99999\t{item % 400 + 1}\t4\t{last + item}\n")
    workdir = tmp_path / "work"
    command = [str(TRAINING_PYTHON), "-m", "pipelines.training.run", "--data-dir",
               str(data_dir), "--workdir", str(workdir)]
    for override in SMALL_RUN:
        command += ["--set", override]
    result = subprocess.run(command, cwd=ROOT, env=service_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1
    assert "DataAnomaliesError" in result.stderr and "occupation" in result.stderr
    assert "Traceback" not in result.stderr.split("error: the pipeline stopped")[-1]
    assert not (workdir / "model_repo").exists(), "models were pushed from bad data"
