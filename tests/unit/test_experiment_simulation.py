import json

import pytest

from pipelines.experiments import analysis, canary_decision, simulation, stats, world
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


def test_a_worse_canary_is_not_promoted_and_a_better_one_is(users):
    """Judged on outcomes at every look: 20 worse candidates (most popular replacing EASE)
    and 20 better ones (the reverse), 3,000 users each."""
    study = simulation.Study(canary_users=3000, canary_runs=20)
    found = simulation.canary_decisions(users, study)
    assert found["worse"]["hits"] <= 1  # false promotions: at most alpha (5%)
    assert found["better"]["hits"] >= 18


def test_a_canary_decision_names_why(users):
    rules = canary_decision.Rules()
    settings = analysis.Settings(control="stable")
    worse = experiment.analyze(experiment.simulate(users, experiment.Design(
        users=3000, arms=simulation.CANARIES["worse"],
        weights={"stable": 50, "canary": 50}), seed=5), settings)
    decision = canary_decision.decide(worse, rules, final=False)
    assert decision.action == "rollback" and decision.reasons[0].startswith(
        "worse than stable: conversion")
    assert decision.figures["high"] < 0
    broken = experiment.simulate(users, experiment.Design(
        users=3000, arms=simulation.CANARIES["as good"], weights={"stable": 50, "canary": 50},
        drop_share={"canary": 0.3}), seed=6)
    decision = canary_decision.decide(experiment.analyze(broken, settings), rules, final=True)
    assert decision.action == "rollback" and "sample ratio mismatch" in decision.reasons[0]
    few = experiment.analyze(experiment.simulate(users, experiment.Design(
        users=40, arms=simulation.CANARIES["as good"], weights={"stable": 50, "canary": 50}),
        seed=7), analysis.Settings(control="stable", min_users_per_arm=100))
    assert canary_decision.decide(few, rules, final=False).action == "continue"
    assert canary_decision.decide(few, rules, final=True).action == "rollback"


@pytest.mark.skipif(not MOVIELENS.is_dir(), reason="MovieLens not present")
def test_movielens_study_end_to_end(tmp_path, capsys):
    code = simulation.main(["--data-dir", str(MOVIELENS), "--sizes", "1500",
                            "--power-runs", "6", "--aa-users", "300", "--aa-runs", "10",
                            "--srm-users", "300", "--srm-runs", "2", "--looks", "4",
                            "--canary-users", "1500", "--canary-runs", "3",
                            "--out", str(tmp_path)])
    assert code == 0
    figures = json.loads((tmp_path / "simulation.json").read_text())
    assert figures["power"][0]["fixed"]["rate"] >= 5 / 6  # EASE beats most popular
    assert figures["power"][0]["wrong_winner"]["hits"] == 0
    assert "<svg" in (tmp_path / "report.html").read_text()
    example = json.loads((tmp_path / "example" / "analysis.json").read_text())
    assert example["verdict"]["winner"] == "treatment"
    out = capsys.readouterr().out
    assert "power at  1500 users" in out and "canary (1500 users, margin 10%): worse" in out
    assert figures["canary"]["worse"]["hits"] == 0
