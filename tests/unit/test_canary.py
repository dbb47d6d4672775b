import dataclasses
import json

import numpy as np
import pytest

from pipelines.experiments import canary

PLAN = canary.Plan({"ranking": 9}, {"ranking": 8}, steps=[5, 50], step_seconds=10,
                   min_requests=20, min_users=20)


class Admin:
    """Records the admin calls a canary makes (the router's side is tested for real in
    tests/integration/test_rollouts.py)."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda request, metadata: self.calls.append((name, request))


def write_logs(folder, start, users, conversion, fallback=0.0, share=50, seed=0,
               name="a"):
    """`users` users, one answer each, spread over the 10 s from `start`; an arm by
    `share`; a click on the first item with the arm's conversion probability."""
    rng = np.random.default_rng(seed)
    exposures, outcomes = [], []
    for i in range(users):
        arm = "canary" if rng.random() * 100 < share else "stable"
        t = start + 10 * i / users
        exposures.append({"request_id": f"{name}{i}", "timestamp": t, "user_id": f"{name}{i}",
                          "config_version": "c", "items": ["1", "2"], "latency_ms": 10.0,
                          "fallback": bool(arm == "canary" and rng.random() < fallback),
                          "assignments": [{"layer": "canary", "experiment": PLAN.key,
                                           "arm": arm}]})
        if rng.random() < conversion[arm]:
            outcomes.append({"request_id": f"{name}{i}", "user_id": f"{name}{i}",
                             "item_id": "1", "timestamp": t + 1, "value": 1, "type": "click"})
    for kind in ("exposures", "outcomes"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for kind, rows in (("exposures", exposures), ("outcomes", outcomes)):
        with open(folder / kind / f"{kind}-{name}.jsonl", "a") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)
    return canary.Logs(folder / "exposures", folder / "outcomes")


def test_the_canary_arm_comes_first_so_a_ramp_only_adds_users():
    message = canary.experiment(PLAN, 5)
    assert [(a.name, a.weight, a.serves.ranking_version) for a in message.arms] == [
        ("canary", 5, 9), ("stable", 95, 8)]
    assert (message.key, message.layer) == ("canary-ranking-9", "canary")
    both = canary.Plan({"retrieval": 4, "ranking": 9}, {"retrieval": "stable",
                                                         "ranking": "stable"})
    message = canary.experiment(both, 1)
    assert message.key == "canary-ranking-9-retrieval-4"
    assert message.arms[1].serves.ranking_version_label == "stable"
    assert message.arms[0].serves.retrieval_version == 4


def test_a_step_is_judged_on_the_answers_given_in_it(tmp_path):
    log = write_logs(tmp_path, 0, 100, {"canary": 0.5, "stable": 0.5}, name="early")
    write_logs(tmp_path, 100, 100, {"canary": 0.5, "stable": 0.5}, name="late")
    frame, joined = canary.step_data(PLAN, log, since=100)
    assert len(frame) == 100 and frame.user_id.str.startswith("late").all()
    assert set(joined.outcomes.request_id) <= set(frame.request_id)
    strict = dataclasses.replace(PLAN, min_requests=1000)
    assert canary.step_data(strict, log, since=100) is None  # too few to judge


def test_a_worse_canary_is_rolled_back_at_a_look_a_broken_one_on_its_guardrail(tmp_path):
    worse = write_logs(tmp_path / "worse", 0, 2000, {"canary": 0.1, "stable": 0.3})
    decision = canary.judge(PLAN, 50, canary.step_data(PLAN, worse, 0), final=False)
    assert decision.action == "rollback" and "worse than stable" in decision.reasons[0]
    broken = write_logs(tmp_path / "broken", 0, 400, {"canary": 0.3, "stable": 0.3},
                        fallback=0.5)
    decision = canary.judge(PLAN, 50, canary.step_data(PLAN, broken, 0), final=False)
    assert decision.action == "rollback"
    assert decision.reasons[0].startswith("guardrail: fallback rate")


def test_an_unproven_canary_continues_then_ends_rolled_back(tmp_path):
    few = write_logs(tmp_path, 0, 100, {"canary": 0.3, "stable": 0.3})
    data = canary.step_data(PLAN, few, 0)
    assert canary.judge(PLAN, 50, data, final=False).action == "continue"
    decision = canary.judge(PLAN, 50, data, final=True)
    assert decision.action == "rollback" and "not shown within 10%" in decision.reasons[0]


def test_a_good_canary_ramps_then_is_promoted_across_a_restart(tmp_path):
    admin, progress, lines = Admin(), canary.Progress(), []
    log = canary.Logs(tmp_path / "exposures", tmp_path / "outcomes")
    look = dict(admin=admin, token="t", log=log, progress_line=lines.append)
    assert canary.advance(PLAN, progress, now=0, **look) is None
    assert [c[0] for c in admin.calls] == ["CreateExperiment"]
    write_logs(tmp_path, 1, 1000, {"canary": 0.5, "stable": 0.5}, share=5, name="s1")
    assert canary.advance(PLAN, progress, now=12, **look) is None  # time for the next step
    assert progress.step == 1 and admin.calls[-1][1].experiment.arms[0].weight == 50
    # the controller keeps the progress as plain data; a new process goes on from it
    progress = canary.Progress(**json.loads(json.dumps(dataclasses.asdict(progress))))
    write_logs(tmp_path, 13, 3000, {"canary": 0.6, "stable": 0.3}, name="s2")
    result = canary.advance(PLAN, progress, now=30, **look)
    assert result["outcome"] == "promoted", result
    assert [c[0] for c in admin.calls[-2:]] == ["SwitchDefaults", "StopExperiment"]
    assert admin.calls[-2][1].defaults.ranking_version == 9
    assert [s["share"] for s in result["steps"]] == [5, 50]
    assert result["steps"][-1]["low"] > result["steps"][-1]["floor"]
    assert lines[-1].startswith("canary canary-ranking-9: PROMOTED")


def test_a_last_step_without_traffic_ends_rolled_back(tmp_path):
    admin, progress = Admin(), canary.Progress(step=1, step_start=0, started=0)
    log = canary.Logs(tmp_path / "exposures", tmp_path / "outcomes")
    log.exposures.mkdir()
    look = dict(admin=admin, token="t", log=log, progress_line=lambda _: None)
    assert canary.advance(PLAN, progress, now=20, **look) is None
    result = canary.advance(PLAN, progress, now=31, **look)
    assert result["outcome"] == "rolled back" and "too little traffic" in result["reasons"][0]
    assert [c[0] for c in admin.calls] == ["StopExperiment"]


@pytest.mark.parametrize("argv, message", [
    (["--model", "ranking", "--version", "2", "--steps", "5,x"], "--steps must be"),
    (["--model", "ranking", "--version", "2", "--margin", "2"], "--margin must be"),
])
def test_the_cli_names_a_bad_argument(argv, message, capsys):
    with pytest.raises(SystemExit):
        canary.main(argv)
    assert message in capsys.readouterr().err
