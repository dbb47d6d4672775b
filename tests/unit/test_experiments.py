import collections
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import yaml
from scipy import stats

from libs import config as config_lib
from libs.experiments import ExperimentConfig, ExperimentSource
from tests.conftest import ROOT, TRAINING_PYTHON

USERS = [str(u) for u in range(100_000)]
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def experiment(key, arms, **fields):
    return {"key": key, "arms": [{"name": n, "weight": w, "serves": s}
                                 for n, w, s in arms], **fields}


def document(*layers, **fields):
    return {"version": "v1", "layers": [{"name": name, "experiments": list(experiments)}
                                        for name, experiments in layers], **fields}


def load(doc) -> ExperimentConfig:
    return config_lib.from_dict(ExperimentConfig, doc, "experiments")


THREE_ARMS = experiment("exp", [("a", 70, {"num_candidates": 50}), ("b", 20, {"rank": False}),
                                ("c", 10, {})], salt="salt-1")


def arm_of(config, user, **kwargs):
    _, assignments = config.resolve(user, now=kwargs.pop("now", NOW), **kwargs)
    return assignments[0].arm if assignments else None


def test_arm_shares_match_weights_over_100k_users():
    config = load(document(("layer", [THREE_ARMS])))
    counts = collections.Counter(arm_of(config, u) for u in USERS)
    _, p_value = stats.chisquare([counts[a] for a in "abc"], [70_000, 20_000, 10_000])
    assert p_value > 0.001, counts


def test_each_arm_serves_the_defaults_with_its_own_settings():
    config = load(document(("layer", [THREE_ARMS]), defaults={"num_candidates": 80}))
    served = {arm_of(config, u): config.resolve(u, now=NOW)[0] for u in USERS[:200]}
    assert (served["a"].num_candidates, served["a"].rank) == (50, True)
    assert (served["b"].num_candidates, served["b"].rank) == (80, False)
    assert (served["c"].num_candidates, served["c"].rank) == (80, True)


def test_two_layers_assign_independently():
    config = load(document(
        ("models", [experiment("m", [("m1", 1, {"ranking_version": 1}),
                                     ("m2", 1, {"ranking_version": 2})])]),
        ("depth", [experiment("d", [("d1", 1, {"num_candidates": 50}),
                                    ("d2", 1, {"num_candidates": 200})])])))
    pairs = collections.Counter(
        tuple(a.arm for a in config.resolve(u, now=NOW)[1]) for u in USERS)
    table = [[pairs[("m1", "d1")], pairs[("m1", "d2")]],
             [pairs[("m2", "d1")], pairs[("m2", "d2")]]]
    _, p_value, _, _ = stats.chi2_contingency(table)
    assert p_value > 0.001, table


def test_a_layers_experiments_split_its_users_without_overlap():
    config = load(document(("layer", [experiment("x", [("x1", 1, {})], traffic=[0, 30]),
                                      experiment("y", [("y1", 1, {})], traffic=[30, 100])])))
    counts = collections.Counter(
        tuple(a.experiment for a in config.resolve(u, now=NOW)[1]) for u in USERS)
    assert set(counts) == {("x",), ("y",)}  # every user in exactly one of them
    _, p_value = stats.chisquare([counts[("x",)], counts[("y",)]], [30_000, 70_000])
    assert p_value > 0.001, counts


def test_users_outside_every_range_get_the_defaults():
    config = load(document(("layer", [experiment("x", [("x1", 1, {"rank": False})],
                                                 traffic=[0, 10])])))
    outside = [u for u in USERS[:500] if arm_of(config, u) is None]
    assert 400 < len(outside) < 500
    assert config.resolve(outside[0], now=NOW)[0].rank is True


@pytest.mark.parametrize("python", [sys.executable, str(TRAINING_PYTHON)])
def test_assignment_is_the_same_in_another_process_and_python_version(python):
    if not os.path.exists(python):
        pytest.skip("the training environment is not set up")
    users = USERS[:200]
    here = [arm_of(load(document(("layer", [THREE_ARMS]))), u) for u in users]
    code = ("import yaml, sys; from datetime import datetime, timezone;"
            "from libs import config; from libs.experiments import "
            "ExperimentConfig as E;"
            "c = config.from_dict(E, yaml.safe_load(sys.stdin), 'stdin');"
            "now = datetime(2026, 12, 1, tzinfo=timezone.utc);"
            f"print(','.join(c.resolve(str(u), now=now)[1][0].arm for u in range({len(users)})))")
    there = subprocess.run([python, "-c", code], cwd=ROOT, capture_output=True, text=True,
                           check=True, input=yaml.safe_dump(document(("layer", [THREE_ARMS]))),
                           env={"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "123"})
    assert there.stdout.strip().split(",") == here


def test_another_salt_reshuffles_users():
    config = load(document(("layer", [THREE_ARMS])))
    other = load(document(("layer", [{**THREE_ARMS, "salt": "salt-2"}])))
    moved = sum(arm_of(config, u) != arm_of(other, u) for u in USERS[:2000])
    assert moved > 500


def test_targeting_matches_request_attributes():
    config = load(document(("layer", [experiment("x", [("x1", 1, {})],
                                                 targeting={"surface": ["home", "tv"]})])))
    assert arm_of(config, "7", attributes={"surface": "tv"}) == "x1"
    assert arm_of(config, "7", attributes={"surface": "search"}) is None
    assert arm_of(config, "7") is None


def test_start_stop_and_status_decide_who_is_in():
    def with_(**fields):
        return load(document(("layer", [experiment("x", [("x1", 1, {})], **fields)])))
    assert arm_of(with_(start="2026-12-02T00:00:00Z"), "7") is None
    assert arm_of(with_(start="2026-11-30T00:00:00Z", stop="2026-12-02T00:00:00Z"), "7") == "x1"
    assert arm_of(with_(stop="2026-12-01T00:00:00+00:00"), "7") is None
    assert arm_of(with_(status="paused"), "7") is None


def test_allowlisted_users_get_their_arm_unless_the_experiment_stopped():
    def with_(**fields):
        return load(document(("layer", [experiment(
            "x", [("x1", 1, {}), ("x2", 1, {"rank": False})], traffic=[0, 1],
            targeting={"surface": ["tv"]}, allowlist={"qa-1": "x2"}, **fields)])))
    assert arm_of(with_(), "qa-1") == "x2"  # outside the traffic range and the targeting
    assert with_().resolve("qa-1", now=NOW)[0].rank is False
    assert arm_of(with_(status="paused"), "qa-1") == "x2"
    assert arm_of(with_(status="stopped"), "qa-1") is None


def test_shipped_experiment_files_are_valid():
    for path in ("services/router/experiments.yaml", "k8s/base/config/experiments.yaml"):
        loaded = config_lib.load(ExperimentConfig, ROOT / path)
        arms = {a.name for layer in loaded.layers for e in layer.experiments for a in e.arms}
        assert arms == {"two_stage", "retrieval_only"}, path


GOOD_ARM = [("a", 1, {})]


@pytest.mark.parametrize("doc, words", [
    (document(("l", [experiment("e", [])])), "experiment 'e': field 'arms' is empty"),
    (document(("l", [experiment("e", [("a", 0, {})])])), "arm 'a': field 'weight' must be"),
    (document(("l", [experiment("e", [("a", 1, {}), ("a", 1, {})])])), "duplicate arm names"),
    (document(("l", [experiment("e", [("a", 1, {"rnak": True})])])),
     "arm 'a': field 'serves': unknown key(s) 'rnak'"),
    (document(("l", [experiment("e", [("a", 1, {"num_candidates": "many"})])])),
     "field 'num_candidates': must be an integer"),
    (document(("l", [experiment("e", GOOD_ARM, traffic=[50, 20])])), "field 'traffic'"),
    (document(("l", [experiment("e", GOOD_ARM, traffic=[0, 60]),
                     experiment("f", GOOD_ARM, traffic=[50, 100])])), "overlapping traffic"),
    (document(("l", [experiment("e", GOOD_ARM, status="live")])), "field 'status'"),
    (document(("l", [experiment("e", GOOD_ARM, start="tomorrow")])), "field 'start'"),
    (document(("l", [experiment("e", GOOD_ARM, start="2026-12-01T00:00:00")])),
     "needs a time zone"),
    (document(("l", [experiment("e", GOOD_ARM, allowlist={"u1": "b"})])),
     "user 'u1' is sent to arm 'b'"),
    (document(("l", [experiment("e", [("a", 1, {"rank": False})])]),
              ("m", [experiment("f", [("b", 1, {"rank": True})])])),
     "serving parameter 'rank' is set in layers 'l' and 'm'"),
    (document(("l", [experiment("e", GOOD_ARM)]), ("m", [experiment("e", GOOD_ARM)])),
     "duplicate experiment names: ['e']"),
    ({**document(("l", [experiment("e", GOOD_ARM)])), "layerz": []}, "unknown key(s) 'layerz'"),
    (document(("l", [experiment("e", [("a", 1, {"ranking_version": 0,
                                                 "ranking_version_label": "canary"})])])),
     "arm 'a': field 'serves': field 'ranking_version_label': set ranking_version or "
     "ranking_version_label, not both"),
    (document(defaults={"retrieval_version": 3, "retrieval_version_label": "stable"}),
     "field 'retrieval_version_label': set retrieval_version or retrieval_version_label"),
    (document(("l", [experiment("e", [("a", 1, {"ranking_version_label": ""})])])),
     "arm 'a': field 'serves': field 'ranking_version_label' is empty"),
    (document(("l", [experiment("e", [("a", 1, {"ranking_version_label": "can ary"})])])),
     "field 'ranking_version_label' must be a label such as stable or canary"),
    (document(("l", [experiment("e", [("a", 1, {"ranking_version": 2})])]),
              ("m", [experiment("f", [("b", 1, {"ranking_version_label": "canary"})])])),
     "serving parameter 'ranking_version' (the model's version or version label) is set "
     "in layers 'l' and 'm'"),
])
def test_bad_documents_are_refused_naming_the_field(doc, words):
    with pytest.raises(config_lib.ConfigError) as err:
        load(doc)
    assert words in str(err.value)


def test_bad_new_file_is_refused_and_the_running_config_stays(tmp_path, caplog):
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump({**document(("l", [experiment("e", GOOD_ARM)])),
                                    "version": "good"}))
    source = ExperimentSource(str(path))
    path.write_text(yaml.safe_dump(document(("l", [experiment("e", [("a", -1, {})])]))))
    os.utime(path, (1, 1))  # a different mtime, whatever the clock resolution
    assert not source.reload_if_changed()
    assert source.current.version == "good"
    assert "field 'weight' must be positive" in caplog.records[-1].fields["error"]


def test_good_new_file_is_picked_up(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump({**document(), "version": "one"}))
    source = ExperimentSource(str(path))
    path.write_text(yaml.safe_dump({**document(), "version": "two"}))
    os.utime(path, (1, 1))
    assert source.reload_if_changed() and source.current.version == "two"


def test_a_stopped_experiment_frees_its_traffic_for_the_next():
    config = load(document(("layer", [
        experiment("old", [("o", 1, {})], status="stopped"),
        experiment("new", [("n", 1, {})])])))
    assert arm_of(config, "7") == "n"


def test_an_arms_version_or_label_replaces_the_defaults_other_one():
    config = load(document(("layer", [experiment("c", [
        ("canary", 1, {"ranking_version_label": "canary"}),
        ("pinned", 1, {"ranking_version": 4})])]),
        defaults={"ranking_version_label": "stable", "retrieval_version": 2}))
    served = {arm_of(config, u): config.resolve(u, now=NOW)[0] for u in USERS[:100]}
    assert (served["canary"].ranking_version, served["canary"].ranking_version_label) == \
        (0, "canary")
    assert (served["pinned"].ranking_version, served["pinned"].ranking_version_label) == (4, "")
    assert served["canary"].retrieval_version == 2  # the other model keeps the defaults'
