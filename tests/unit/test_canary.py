import json

from pipelines.experiments import canary

PLAN = canary.Plan("ranking", 9, 8, steps=[5, 50], min_requests=2)


def stats(requests=100, error_rate=0.0, p99_ms=20.0, mean_score=4.0):
    return canary.ArmStats(requests, error_rate, p99_ms, mean_score)


def test_each_guardrail_names_what_broke():
    assert canary.breaches(PLAN, stats(), stats()) == []
    [errors] = canary.breaches(PLAN, stats(error_rate=0.05), stats(error_rate=0.01))
    assert errors.startswith("error rate 0.050 vs stable 0.010")
    [latency] = canary.breaches(PLAN, stats(p99_ms=40), stats(p99_ms=20))
    assert latency.startswith("p99 latency 40.0 ms")
    [quality] = canary.breaches(PLAN, stats(mean_score=3.0), stats(mean_score=4.0))
    assert quality.startswith("mean served score 3.000")


def test_the_canary_arm_comes_first_so_a_ramp_only_adds_users():
    message = canary.experiment(PLAN, 5)
    assert [(a.name, a.weight, a.serves.ranking_version) for a in message.arms] == [
        ("canary", 5, 9), ("stable", 95, 8)]
    assert (message.key, message.layer) == ("canary-ranking-9", "canary")


def test_arm_stats_read_the_step_window_of_the_exposure_log(tmp_path):
    def line(t, arm, fallback, latency, key="canary-ranking-9", ranking=9):
        return json.dumps({"timestamp": t, "fallback": fallback, "latency_ms": latency,
                           "scores": [4.0, 3.0] if ranking else [9.0],
                           "model_versions": {"retrieval": 1, "ranking": ranking},
                           "assignments": [{"layer": "canary", "experiment": key, "arm": arm}]})
    (tmp_path / "exposures-2026-11-27-h-1.jsonl").write_text("\n".join([
        line(5, "canary", True, 900),  # before the step: not counted
        line(10, "canary", True, 30), line(11, "canary", False, 10),
        line(12, "stable", False, 10), line(13, "stable", False, 12, key="other"),
        line(14, "stable", False, 10, ranking=0)]))  # not ranked: its score is not counted
    found = canary.arm_stats(tmp_path, "canary-ranking-9", since=10, model="ranking")
    assert found["canary"].requests == 2 and found["canary"].error_rate == 0.5
    assert found["stable"].requests == 2 and found["stable"].mean_score == 3.5
