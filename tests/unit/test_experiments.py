import os
import subprocess
import sys

import pytest
from scipy import stats

from libs import config as config_lib
from services.router.experiments import Arm, ExperimentConfig, ExperimentSource
from tests.conftest import ROOT

EXPERIMENT = ExperimentConfig("v1", "exp", "salt-1", [Arm("a", 70), Arm("b", 20), Arm("c", 10)])


def test_arm_shares_match_weights_over_100k_users():
    counts = {"a": 0, "b": 0, "c": 0}
    for user in range(100_000):
        counts[EXPERIMENT.assign(str(user)).name] += 1
    expected = [70_000, 20_000, 10_000]
    _, p_value = stats.chisquare(list(counts.values()), expected)
    assert p_value > 0.001, counts


def test_assignment_is_the_same_in_another_process():
    users = [str(u) for u in range(50)]
    here = [EXPERIMENT.assign(u).name for u in users]
    code = ("from services.router.experiments import Arm, ExperimentConfig as E;"
            "e = E('v1', 'exp', 'salt-1', [Arm('a', 70), Arm('b', 20), Arm('c', 10)]);"
            f"print(','.join(e.assign(str(u)).name for u in range({len(users)})))")
    there = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, check=True, env={"PYTHONPATH": str(ROOT),
                                                       "PYTHONHASHSEED": "123"})
    assert there.stdout.strip().split(",") == here


def test_another_salt_reshuffles_users():
    other = ExperimentConfig("v1", "exp", "salt-2", EXPERIMENT.arms)
    moved = sum(EXPERIMENT.assign(str(u)).name != other.assign(str(u)).name
                for u in range(2000))
    assert moved > 500


def test_shipped_experiment_file_is_valid():
    loaded = config_lib.load(ExperimentConfig, ROOT / "services/router/experiments.yaml")
    assert {a.name for a in loaded.arms} == {"two_stage", "retrieval_only"}


@pytest.mark.parametrize("text, words", [
    ("version: x\nname: e\nsalt: s\narms: []\n", "field 'arms' is empty"),
    ("version: x\nname: e\nsalt: s\narms: [{name: a, weight: 0}]\n",
     "arm 'a': field 'weight' must be positive"),
    ("version: x\nname: e\nsalt: s\narms: [{name: a, weight: 1}, {name: a, weight: 1}]\n",
     "duplicate arm names"),
    ("version: x\nname: e\nsalt: s\narms: [{name: a, weigth: 1}]\n", "unknown key(s) 'weigth'"),
])
def test_bad_experiment_config_is_refused_and_running_one_stays(tmp_path, text, words, caplog):
    path = tmp_path / "experiments.yaml"
    path.write_text("version: good\nname: e\nsalt: s\narms: [{name: a, weight: 1}]\n")
    source = ExperimentSource(str(path))
    path.write_text(text)
    os.utime(path, (1, 1))  # a different mtime, whatever the clock resolution
    assert not source.reload_if_changed()
    assert source.current.version == "good"
    assert words in caplog.records[-1].fields["error"]


def test_good_new_config_is_picked_up(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text("version: one\nname: e\nsalt: s\narms: [{name: a, weight: 1}]\n")
    source = ExperimentSource(str(path))
    path.write_text("version: two\nname: e\nsalt: s\narms: [{name: b, weight: 1}]\n")
    os.utime(path, (1, 1))
    assert source.reload_if_changed() and source.current.version == "two"
