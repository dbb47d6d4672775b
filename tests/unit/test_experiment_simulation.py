import json

import pytest

from pipelines.experiments import analysis, simulation, stats, world
from pipelines.experiments import simulated_experiment as experiment
from tests.conftest import MOVIELENS

ALPHA = 0.05


@pytest.fixture(scope="module")
def users():
    return world.synthetic_world()


@pytest.fixture(scope="module")
def aa_runs(users):
    design = experiment.Design(users=300, arms=simulation.AA)
    return experiment.run_many(users, design, 200, analysis.Settings(alpha=ALPHA, looks=10))


def test_logs_are_in_the_router_format_and_join_through_both_paths(users):
    logs = experiment.simulate(users, experiment.Design(users=200), seed=3)
    record = logs.exposures[0]
    assert set(record) == {"request_id", "timestamp", "user_id", "config_version",
                           "assignments", "model_versions", "items", "fallback",
                           "latency_ms"}
    assert len(record["items"]) == 10
    result = experiment.analyze(logs, analysis.Settings())
    assert result.attribution["by_request_id"] > 0 and result.attribution["by_window"] > 0
    assert result.attribution["unjoined"] == 0


def test_aa_fixed_horizon_false_positive_rate_is_alpha(aa_runs):
    _, hits, runs = experiment.rate(aa_runs, lambda r: r.fixed_p < ALPHA)
    low, high = stats.binomial_interval(hits, runs, confidence=0.99)
    assert low <= ALPHA <= high, f"{hits}/{runs} false positives"


def test_peeking_inflates_the_naive_test_but_not_the_sequential_one(aa_runs):
    _, naive, runs = experiment.rate(aa_runs, lambda r: r.naive_peek_min_p < ALPHA)
    _, sequential, _ = experiment.rate(aa_runs, lambda r: r.sequential_p < ALPHA)
    assert stats.binomial_interval(naive, runs)[0] > ALPHA, f"naive {naive}/{runs}"
    assert sequential / runs <= ALPHA, f"sequential {sequential}/{runs}"


def test_the_better_recommender_wins_and_the_worse_never_does(users):
    design = experiment.Design(users=1000)
    runs = experiment.run_many(users, design, 15, analysis.Settings(looks=5), first_seed=50)
    winners = [run.winner for run in runs]
    assert winners.count("treatment") >= 12 and "control" not in winners


def test_a_broken_split_is_caught_by_srm_and_blocks_the_verdict(users):
    # 10% of 6000 users is about 5 standard deviations of the split: caught almost always
    broken = experiment.Design(users=12_000, arms=simulation.AA,
                               drop_share={"treatment": 0.10})
    runs = experiment.run_many(users, broken, 4, analysis.Settings(looks=2), first_seed=70)
    assert all(run.srm_p < 0.001 and run.blocked for run in runs)


def test_aa_runs_raise_no_srm_alarm(aa_runs):
    assert sum(run.srm_p < 0.001 or run.blocked for run in aa_runs) <= 2


@pytest.mark.skipif(not MOVIELENS.is_dir(), reason="MovieLens not present")
def test_movielens_study_end_to_end(tmp_path, capsys):
    code = simulation.main(["--data-dir", str(MOVIELENS), "--sizes", "1500",
                            "--power-runs", "6", "--aa-users", "300", "--aa-runs", "10",
                            "--srm-users", "300", "--srm-runs", "2", "--looks", "4",
                            "--out", str(tmp_path)])
    assert code == 0
    figures = json.loads((tmp_path / "simulation.json").read_text())
    assert figures["power"][0]["fixed"]["rate"] >= 5 / 6  # EASE beats most popular
    assert figures["power"][0]["wrong_winner"]["hits"] == 0
    assert "<svg" in (tmp_path / "report.html").read_text()
    example = json.loads((tmp_path / "example" / "analysis.json").read_text())
    assert example["verdict"]["winner"] == "treatment"
    assert "power at  1500 users" in capsys.readouterr().out
