import json

import numpy as np
import pytest
import yaml

from pipelines.experiments import analysis, analyze, exposures

DAY = 86_400.0
T0 = 1_796_083_200.0


def exposure(request, user, arm, t, items=("1", "2", "3"), fallback=False, latency=40.0,
             experiment="exp"):
    return {"request_id": request, "timestamp": t, "user_id": user, "config_version": "v1",
            "assignments": [{"layer": "pipeline", "experiment": experiment, "arm": arm}],
            "model_versions": {"retrieval": 1, "ranking": 1}, "items": list(items),
            "fallback": fallback, "latency_ms": latency}


def outcome(user, item, t, value=1.0, request=None):
    record = {"user_id": user, "item_id": item, "timestamp": t, "value": value}
    if request:
        record["request_id"] = request
    return record


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_config(path, weights=(("control", 50), ("treatment", 50)), allowlist=None):
    experiment = {"key": "exp", "arms": [{"name": n, "weight": w, "serves": {}}
                                         for n, w in weights]}
    if allowlist:
        experiment["allowlist"] = allowlist
    path.write_text(yaml.safe_dump({"version": "v1", "layers": [
        {"name": "pipeline", "experiments": [experiment]}]}))
    return path


def world(users=400, rates=(0.2, 0.4), seed=0, split=(0.5, 0.5), latency=(40, 40)):
    """Exposures and outcomes of `users`, converting at each arm's rate."""
    rng = np.random.default_rng(seed)
    logs, events = [], []
    for n in range(users):
        arm = "control" if rng.random() < split[0] else "treatment"
        i = 0 if arm == "control" else 1
        t = T0 + rng.uniform(0, 10 * DAY)
        user = f"u{n}"
        logs.append(exposure(f"r{n}", user, arm, t, latency=rng.normal(latency[i], 2)))
        if rng.random() < rates[i]:
            # half carry their request id, half are joined through the window
            events.append(outcome(user, "2", t + 60, 4.0, f"r{n}" if n % 2 else None))
    return logs, events


def cli(tmp_path, logs, events, *extra, config=None):
    args = ["--exposures", str(write_jsonl(tmp_path / "exp.jsonl", logs)),
            "--outcomes", str(write_jsonl(tmp_path / "out.jsonl", events)),
            "--experiment", "exp", "--config", str(config or write_config(tmp_path / "c.yaml")),
            "--out", str(tmp_path / "report"), *extra]
    return analyze.main(args)


def test_cli_finds_the_better_arm_and_writes_report_and_json(tmp_path, capsys):
    logs, events = world()
    assert cli(tmp_path, logs, events) == 0
    printed = capsys.readouterr().out
    assert "winner: treatment" in printed
    result = json.loads((tmp_path / "report" / "analysis.json").read_text())
    conversion = result["results"]["treatment"]["conversion"]
    assert conversion["difference"] == pytest.approx(0.2, abs=0.07)
    assert conversion["low"] < conversion["difference"] < conversion["high"]
    assert result["attribution"]["by_window"] > 0 and result["attribution"]["by_request_id"] > 0
    assert result["srm"]["p_value"] > 0.001
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("<svg") >= 3 and "winner: treatment" in page


def test_no_winner_when_arms_are_the_same(tmp_path, capsys):
    logs, events = world(rates=(0.3, 0.3), seed=4)
    assert cli(tmp_path, logs, events) == 0
    assert "no winner" in capsys.readouterr().out


def test_sample_ratio_mismatch_blocks_the_verdict(tmp_path, capsys):
    logs, events = world(users=1000, split=(0.6, 0.4))
    assert cli(tmp_path, logs, events) == 0
    printed = capsys.readouterr().out
    assert "BLOCKED: sample ratio mismatch" in printed and "winner: treatment" not in printed
    result = json.loads((tmp_path / "report" / "analysis.json").read_text())
    assert result["verdict"]["blocked"] and result["verdict"]["winner"] is None
    assert "class='blocked'" in (tmp_path / "report" / "report.html").read_text()


def test_a_slower_arm_fails_its_guardrail_and_cannot_win(tmp_path, capsys):
    logs, events = world(latency=(40, 60))
    assert cli(tmp_path, logs, events, "--latency-margin", "0.2") == 0
    printed = capsys.readouterr().out
    assert "guardrail failed: p99 latency" in printed and "no winner" in printed


def test_outcome_joins_latest_exposure_that_served_the_item_within_the_window():
    frame = exposures.exposures_frame(enumerate([
        exposure("a", "u", "control", T0, items=["1"]),
        exposure("b", "u", "control", T0 + 100, items=["1"]),
        exposure("c", "u", "control", T0 + 200, items=["9"]),  # later, other item
    ]))
    events = exposures.outcomes_frame(enumerate([
        outcome("u", "1", T0 + 300),  # -> b: latest that served item 1
        outcome("u", "1", T0 + 100 + 2 * DAY),  # beyond 24 h of b: not attributed
        outcome("u", "5", T0 + 300),  # never served: not attributed
        outcome("u", "9", T0 + 50, request="a"),  # request id wins over time and item
        outcome("u", "1", T0 + 300, request="zzz"),  # unknown request id: not attributed
    ]))
    joined = exposures.join(frame, events)
    assert sorted(joined.outcomes.request_id) == ["a", "b"]
    assert (joined.by_request_id, joined.by_window, joined.unjoined) == (1, 1, 3)
    wider = exposures.join(frame, events, window_seconds=3 * DAY)
    assert wider.by_window == 2


def test_typed_outcomes_count_once_and_only_the_types_asked_for(tmp_path, capsys):
    typed = [{**outcome("u", "1", T0, 4.0), "event_id": "e1", "type": "rating"},
             {**outcome("u", "1", T0), "event_id": "e1", "type": "rating"},  # two routers
             {**outcome("u", "1", T0), "event_id": "e2", "type": "impression"},
             {**outcome("u", "2", T0), "event_id": "e3", "type": "click"},
             outcome("u", "3", T0)]  # a file of the old format: no id, no type
    path = write_jsonl(tmp_path / "o.jsonl", typed)
    assert list(exposures.read_outcomes(path).item_id) == ["1", "2", "3"]
    assert list(exposures.read_outcomes(path, ["rating"]).value) == [4.0, 1.0]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{**outcome("u", "1", T0), "type": "view"}])
    with pytest.raises(exposures.InputError, match=r"bad.jsonl:1: field 'type' must be one"):
        exposures.read_outcomes(bad)
    logs, events = world()
    with pytest.raises(SystemExit) as exit_:
        cli(tmp_path, logs, events, "--outcome-types", "rating,view")
    assert exit_.value.code == 2 and "--outcome-types: view" in capsys.readouterr().err


def test_csv_outcomes_give_the_same_analysis(tmp_path):
    logs, events = world()
    write_jsonl(tmp_path / "e.jsonl", logs)
    lines = ["user_id,item_id,timestamp,value,request_id"] + [
        f"{e['user_id']},{e['item_id']},{e['timestamp']!r},{e['value']},"
        f"{e.get('request_id', '')}" for e in events]
    (tmp_path / "o.csv").write_text("\n".join(lines) + "\n")
    write_jsonl(tmp_path / "o.jsonl", events)
    config = write_config(tmp_path / "c.yaml")
    results = [analyze.run(tmp_path / "e.jsonl", tmp_path / name, "exp", analysis.Settings(),
                           config).results for name in ("o.csv", "o.jsonl")]
    assert results[0] == results[1]


def test_last_sequential_look_is_the_fixed_horizon_analysis(tmp_path):
    logs, events = world()
    result = analyze.run(write_jsonl(tmp_path / "e.jsonl", logs),
                         write_jsonl(tmp_path / "o.jsonl", events), "exp",
                         analysis.Settings(looks=8), write_config(tmp_path / "c.yaml"))
    assert len(result.looks) == 8
    last = result.looks[-1]
    assert last.fixed_p["conversion"]["treatment"] == pytest.approx(
        result.results["treatment"]["conversion"]["p_value"])
    assert result.users == last.users
    path = result.paths["conversion"]["treatment"]
    # always valid is conservative: at the end it needs more evidence than the fixed test
    assert path.p_values[-1] >= result.results["treatment"]["conversion"]["p_value"]


def test_cuped_uses_pre_period_counts_and_reports_variance_reduction(tmp_path):
    rng = np.random.default_rng(5)
    logs, events, before = [], [], []
    for n in range(600):
        arm = ("control", "treatment")[n % 2]
        t = T0 + rng.uniform(0, 5 * DAY)
        logs.append(exposure(f"r{n}", f"u{n}", arm, t))
        habit = rng.poisson(2)  # heavy users click before and during the experiment
        before += [outcome(f"u{n}", "7", T0 - DAY - k) for k in range(habit)]
        clicks = rng.poisson(0.5 * habit + (0.3 if arm == "treatment" else 0))
        events += [outcome(f"u{n}", "1", t + 10 + k, request=f"r{n}") for k in range(clicks)]
    write_jsonl(tmp_path / "pre.jsonl", before)
    assert cli(tmp_path, logs, events, "--metric", "outcomes_per_user",
               "--pre-period-outcomes", str(tmp_path / "pre.jsonl")) == 0
    result = json.loads((tmp_path / "report" / "analysis.json").read_text())
    assert result["cuped"]["outcomes_per_user"]["variance_reduction"] > 0.3
    adjusted = result["results"]["treatment"]["outcomes_per_user"]
    raw = result["results"]["treatment"]["outcomes_per_user_raw"]
    assert adjusted["high"] - adjusted["low"] < raw["high"] - raw["low"]
    assert "CUPED" in (tmp_path / "report" / "report.html").read_text()


def test_users_in_two_arms_and_allowlisted_users_are_left_out(tmp_path):
    logs, events = world(users=200)
    logs.append(exposure("x1", "u0", "control", T0 + 11 * DAY))
    logs.append(exposure("x2", "u0", "treatment", T0 + 11 * DAY))
    config = write_config(tmp_path / "c.yaml", allowlist={"u1": "treatment"})
    result = analyze.run(write_jsonl(tmp_path / "e.jsonl", logs),
                         write_jsonl(tmp_path / "o.jsonl", events), "exp",
                         analysis.Settings(), config)
    assert sum(result.users.values()) == 198
    assert (result.attribution["users_in_two_arms"],
            result.attribution["allowlisted_users"]) == (1, 1)


@pytest.mark.parametrize("breakage, message", [
    ("missing exposures", "missing.jsonl: no such file"),
    ("bad json", "exp.jsonl:3: not valid JSON"),
    ("missing field", "exp.jsonl:2: field 'latency_ms' is missing"),
    ("wrong type", "exp.jsonl:1: field 'timestamp' must be int or float"),
    ("unknown experiment", "unknown experiment 'nope'"),
    ("empty arm", "no users in arm 'treatment'"),
    ("bad outcome", "out.jsonl:1: field 'value' must be int or float"),
])
def test_bad_input_is_one_line_naming_the_place_and_exit_code_2(tmp_path, capsys,
                                                                breakage, message):
    logs, events = world(users=50)
    experiment = "exp"
    if breakage == "missing field":
        del logs[1]["latency_ms"]
    if breakage == "wrong type":
        logs[0]["timestamp"] = "yesterday"
    if breakage == "empty arm":
        logs = [r for r in logs if r["assignments"][0]["arm"] == "control"]
    if breakage == "unknown experiment":
        experiment = "nope"
    if breakage == "bad outcome":
        events[0]["value"] = "five"
    exposures_path = write_jsonl(tmp_path / "exp.jsonl", logs)
    if breakage == "bad json":
        lines = exposures_path.read_text().splitlines()
        lines[2] = lines[2][:-5]
        exposures_path.write_text("\n".join(lines) + "\n")
    if breakage == "missing exposures":
        exposures_path = tmp_path / "missing.jsonl"
    code = analyze.main(["--exposures", str(exposures_path), "--outcomes",
                         str(write_jsonl(tmp_path / "out.jsonl", events)),
                         "--experiment", experiment,
                         "--config", str(write_config(tmp_path / "c.yaml")),
                         "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_exposures_can_be_a_directory_or_glob(tmp_path):
    logs, events = world()
    (tmp_path / "logs").mkdir()
    write_jsonl(tmp_path / "logs" / "a.jsonl", logs[:150])
    write_jsonl(tmp_path / "logs" / "b.jsonl", logs[150:])
    for spec in (tmp_path / "logs", f"{tmp_path}/logs/*.jsonl"):
        assert len(exposures.read_exposures(spec)) == len(logs)
