"""Drift statistics against hand-computed values, same vs shifted samples, the config."""
import math

import numpy as np
import pandas as pd
import pytest

from libs import config as config_lib
from pipelines.monitoring import drift, features
from pipelines.monitoring.config import DEFAULT_CONFIG, DriftConfig
from pipelines.monitoring.windows import DAY, InputError, parse_when, windows


def test_psi_matches_the_hand_computed_value():
    # reference 1..4 cut at its median 2: shares (0.5, 0.5); recent (0.75, 0.25)
    # PSI = 0.25 ln(0.75/0.5) + (-0.25) ln(0.25/0.5) = 0.25 (ln 1.5 + ln 2)
    result = drift.compare_numeric([1, 2, 3, 4], [1, 1, 1, 4], bins=2)
    assert result.extra["edges"] == [2]
    assert result.reference == [0.5, 0.5] and result.recent == [0.75, 0.25]
    assert result.scores["psi"] == pytest.approx(0.25 * (math.log(1.5) + math.log(2)))
    assert result.scores["psi"] == pytest.approx(0.274653, abs=1e-6)


def test_psi_floors_empty_bins_at_epsilon():
    # recent (1, 0): 0.5 ln(1/0.5) + (1e-4 - 0.5) ln(1e-4/0.5)
    expected = 0.5 * math.log(2) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert drift.psi([0.5, 0.5], [1.0, 0.0], 1e-4) == pytest.approx(expected)
    assert expected == pytest.approx(4.604319, abs=1e-6)
    assert drift.psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0


def test_jsd_and_linf_match_hand_computed_values():
    # p = (1/2, 1/2), q = (1, 0), m = (3/4, 1/4):
    # KL(p||m) = 1/2 log2(2/3) + 1/2 log2(2), KL(q||m) = log2(4/3)
    expected = (0.5 * math.log2(2 / 3) + 0.5 + math.log2(4 / 3)) / 2
    assert drift.jsd([0.5, 0.5], [1, 0]) == pytest.approx(expected)
    assert expected == pytest.approx(0.311278, abs=1e-6)
    assert drift.jsd([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint: the maximum, 1 bit
    assert drift.jsd([0.3, 0.7], [0.3, 0.7]) == 0
    assert drift.linf([0.5, 0.5], [1, 0]) == 0.5


def test_rare_categories_are_pooled_beyond_the_references_most_frequent():
    reference = list("aaaabbbcd")  # a 4, b 3, c 1, d 1
    recent = list("abxxxx")  # x never seen in the reference
    result = drift.compare_categorical(reference, recent, max_categories=2)
    assert result.labels == ["a", "b", drift.OTHER]
    assert result.reference == pytest.approx([4 / 9, 3 / 9, 2 / 9])
    assert result.recent == pytest.approx([1 / 6, 1 / 6, 4 / 6])
    assert result.scores["linf"] == pytest.approx(4 / 6 - 2 / 9)
    assert result.scores["jsd"] == pytest.approx(
        drift.jsd([4 / 9, 3 / 9, 2 / 9], [1 / 6, 1 / 6, 4 / 6]))


def test_repeated_values_collapse_into_fewer_bins():
    ages = np.repeat([20, 30, 40], [50, 30, 20])
    assert drift.quantile_edges(ages, 10).tolist() == [20, 30, 40]
    assert drift.compare_numeric(ages, ages).scores["psi"] == 0


def test_the_same_distribution_is_not_drift_and_a_shift_is():
    rng = np.random.default_rng(0)
    reference = rng.normal(30, 10, 20_000)
    same, shifted = rng.normal(30, 10, 5_000), rng.normal(35, 10, 5_000)
    assert drift.compare_numeric(reference, same).scores["psi"] < 0.02
    assert drift.compare_numeric(reference, shifted).scores["psi"] > 0.2
    jobs = ["student", "engineer", "writer", "other"]
    usual = rng.choice(jobs, 20_000, p=[0.4, 0.3, 0.2, 0.1])
    scores = drift.compare_categorical(usual, rng.choice(jobs, 5_000, p=[0.4, 0.3, 0.2, 0.1]))
    assert scores.scores["jsd"] < 0.01 and scores.scores["linf"] < 0.03
    moved = drift.compare_categorical(usual, rng.choice(jobs, 5_000, p=[0.1, 0.3, 0.2, 0.4]))
    assert moved.scores["jsd"] > 0.1 and moved.scores["linf"] > 0.2


def test_share_difference_is_absolute():
    result = drift.share_difference(np.array([0, 0, 0, 1.0]), np.array([1, 1, 0, 0.0]))
    assert result.scores["share_diff"] == pytest.approx(0.25)
    assert result.extra == {"reference_share": 0.25, "recent_share": 0.5}


def test_a_result_drifts_on_the_methods_over_their_thresholds():
    comparison = drift.compare_categorical(list("aab"), list("bbb"))
    result = drift.Result("features", "x", comparison, {"jsd": 0.1, "linf": 0.9})
    assert result.drifted == ["jsd"] and result.detected
    assert result.to_dict()["drifted_methods"] == ["jsd"]


def test_features_come_from_the_spec_with_time_as_the_model_reads_it():
    checked = {c.name: (c.check, c.kind) for c in features.catalogue()}
    assert checked["age"] == ("features", "numeric")
    assert checked["occupation"] == ("features", "categorical")
    assert checked["rating"] == ("label", "numeric")
    assert "timestamp" not in checked and "rated_items" not in checked
    rows = pd.DataFrame({"timestamp": [0, 3600 * 25 + 7], "genres": ["Drama|War", "Drama"]})
    assert features.values(rows, "hour_of_day").tolist() == [0, 1]
    assert features.values(rows, "day_of_week") == ["Thu", "Fri"]  # 1970-01-01 was a Thursday
    assert features.values(rows, "genres") == ["Drama", "War", "Drama"]


def test_windows_and_times():
    assert parse_when("1998-04-22", "--until") == 893203200
    assert parse_when("1998-04-22T01:00+01:00", "--until") == 893203200
    assert parse_when("893203200", "--until") == 893203200
    reference, recent = windows(100 * DAY, 7, 28)
    assert (recent.start, recent.end) == (93 * DAY, 100 * DAY)
    assert (reference.start, reference.end) == (65 * DAY, 93 * DAY)
    with pytest.raises(InputError, match="overlaps"):
        windows(100 * DAY, 7, 28, reference_from=80 * DAY)
    with pytest.raises(InputError, match="--until 'yesterday'"):
        parse_when("yesterday", "--until")


def test_the_shipped_config_loads_and_overrides_apply():
    config = config_lib.load(DriftConfig, DEFAULT_CONFIG)
    assert (config.thresholds.psi, config.thresholds.jsd, config.thresholds.linf) == \
        (0.2, 0.1, 0.2)
    config = config_lib.load(DriftConfig, DEFAULT_CONFIG,
                             overrides={"features": {"user_id": {"jsd": 0.3}}})
    assert config.threshold("user_id", "jsd") == 0.3
    assert config.threshold("user_id", "linf") == 0.2


@pytest.mark.parametrize("raw, message", [
    ({"tresholds": {}}, "unknown key(s) 'tresholds'"),
    ({"thresholds": {"pis": 0.2}}, "field 'thresholds': unknown key(s) 'pis'"),
    ({"thresholds": {"psi": "high"}}, "field 'psi': must be a number"),
    ({"thresholds": {"psi": 0}}, "field 'psi' must be positive"),
    ({"features": {"agee": {"psi": 0.3}}}, "unknown feature 'agee'"),
    ({"features": {"age": {"jsd": 0.3}}}, "method 'jsd' does not apply to a numeric"),
    ({"skip": ["nope"]}, "field 'skip': unknown feature 'nope'"),
    ({"bins": 1}, "field 'bins' must be at least 2"),
])
def test_the_config_refuses_what_it_does_not_know_naming_the_field(tmp_path, raw, message):
    import yaml

    path = tmp_path / "drift.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.load(DriftConfig, path)
    assert message in str(err.value)
