"""The loop's controller: one holder of the lease at a time (also between processes),
triggers from the monitoring reports, retraining recorded in the audit log, pause and
take-over by a person, a stop mid-retraining that stops it, and a restart that finishes the
job."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest

from libs import model_config
from pipelines.loop import controller, rollout, state as state_lib, timeline, triggers
from pipelines.loop.lease import LeaseFile, LeaseHeld
from tests.conftest import ROOT

NOW = 1_800_000_000.0


def test_a_lease_has_one_holder_until_it_expires_or_a_person_forces_it(tmp_path):
    lease = LeaseFile(tmp_path, seconds=60)
    first = lease.acquire("a", now=NOW)
    with pytest.raises(LeaseHeld, match="held by a until"):
        lease.acquire("b", now=NOW + 30)
    assert lease.acquire("a", now=NOW + 30).acquired == first.acquired  # renewed
    assert lease.acquire("b", now=NOW + 91).holder == "b"  # a stopped renewing
    taken = lease.acquire("person", force=True, now=NOW + 92)
    assert taken.taken_over_from == "b"
    lease.release("b")  # b no longer holds it: nothing happens
    assert lease.read().holder == "person"
    lease.release("person")
    assert lease.read() is None


def test_of_processes_racing_for_the_lease_exactly_one_wins(tmp_path):
    script = ("import sys; from pipelines.loop.lease import LeaseFile, LeaseHeld\n"
              "try:\n    LeaseFile(sys.argv[1], 600).acquire(sys.argv[2]); print('won')\n"
              "except LeaseHeld:\n    print('lost')\n")
    racers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), f"c{n}"],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
              for n in range(8)]
    results = [r.communicate(timeout=60)[0].strip() for r in racers]
    assert results.count("won") == 1 and results.count("lost") == 7


def report(path, generated, **fields):
    path.write_text(json.dumps({"generated_at": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(generated)), **fields}))
    return path


def test_reports_trigger_once_and_the_schedule_when_due(tmp_path):
    drifted = report(tmp_path / "drift.json", NOW, drift=True, results=[
        {"feature": "age", "check": "features", "detected": True},
        {"feature": "gender", "check": "features", "detected": False}])
    below = report(tmp_path / "quality.json", NOW, below_promise=True, verdicts=[
        {"model": "retrieval", "version": 7, "metric": "recall_at_10", "online": 0.05,
         "promise": 0.12, "status": "below"}])
    found = triggers.due(drifted, below, last_retrain=NOW - 3 * 86_400, every_days=7,
                         now=NOW + 60)
    assert [t.kind for t in found] == ["drift", "quality"]
    assert found[0].reason == "drift in age (features)" and "recall_at_10 0.05" in found[1].reason
    # retrained since those reports were written: they were acted upon
    assert triggers.due(drifted, below, NOW + 10, 7, NOW + 60) == []
    [due] = triggers.due(None, None, NOW - 8 * 86_400, 7, NOW)
    assert due.kind == "schedule" and "8.0 days ago" in due.reason
    (tmp_path / "undated.json").write_text("{}")
    with pytest.raises(triggers.ReportError, match="'generated_at'"):
        triggers.due(tmp_path / "undated.json", None, 0, 7, NOW)
    # deployed before the checks' first runs: nothing from them yet, and it says so
    notes = []
    assert triggers.due(tmp_path / "later" / "drift.json", tmp_path / "quality.json",
                        NOW + 10, 7, NOW + 60, note=notes.append) == []
    assert notes == [f"drift: no report at {tmp_path / 'later' / 'drift.json'} yet"]


def fake_pipeline(tmp_path, seconds: float = 0.0, exit_code: int = 0) -> str:
    """A retrain command that pushes a new ranking version (after `seconds`)."""
    script = tmp_path / "pipeline.py"
    script.write_text(
        "import sys, time, pathlib\n"
        f"time.sleep({seconds})\n"
        "repo = pathlib.Path(sys.argv[1]) / 'model_repo' / 'ranking'\n"
        "versions = [int(p.name) for p in repo.glob('*')] or [0]\n"
        "(repo / str(max(versions) + 1)).mkdir(parents=True)\n"
        f"sys.exit({exit_code})\n")
    return shlex.join([sys.executable, str(script), str(tmp_path / "work")])


def tick(tmp_path, command, *extra, lease_seconds=3600):
    return controller.main(["--dir", str(tmp_path / "loop"), "--lease-seconds",
                            str(lease_seconds), "tick", "--workdir", str(tmp_path / "work"),
                            "--retrain-command", command, *extra])


def test_a_drift_report_retrains_and_the_audit_says_why_and_what_was_pushed(tmp_path,
                                                                             capsys):
    pushed = tmp_path / "work" / "model_repo" / "ranking" / "4"
    pushed.mkdir(parents=True)
    os.utime(pushed, (time.time() - 86_400,) * 2)  # trained yesterday, by hand
    drifted = report(tmp_path / "drift.json", time.time(), drift=True, results=[
        {"feature": "age", "check": "features", "detected": True}])
    command = fake_pipeline(tmp_path)
    assert tick(tmp_path, command, "--drift-report", str(drifted), "--retrain-days", "0") == 0
    assert "pushed {'ranking': 5}" in capsys.readouterr().out
    steps = state_lib.history(tmp_path / "loop")
    assert [s["action"] for s in steps] == ["retrain", "retrained"]
    assert steps[0]["triggers"][0]["report"] == str(drifted)
    assert steps[1]["pushed"] == {"ranking": 5}
    why = state_lib.retraining_of(tmp_path / "loop", "ranking", 5)
    assert why["triggers"][0]["kind"] == "drift" and why["started"] == steps[0]["time"]
    assert state_lib.retraining_of(tmp_path / "loop", "ranking", 4) is None  # not the loop's
    assert state_lib.canary_of(tmp_path / "loop", "ranking", 5) is None  # no --router
    state_lib.audit(tmp_path / "loop", "c1", "canary decided", outcome="rolled back",
                    reasons=["worse"], candidate={"ranking": 5}, stable={"ranking": 4},
                    figures={"share": 5})
    decided = state_lib.canary_of(tmp_path / "loop", "ranking", 5)
    assert decided["outcome"] == "rolled back" and decided["stable"] == {"ranking": 4}
    # the report was acted upon: the next tick has nothing to do
    assert tick(tmp_path, command, "--drift-report", str(drifted), "--retrain-days", "0") == 0
    assert "nothing due" in capsys.readouterr().out
    assert LeaseFile(tmp_path / "loop", 60).read() is None  # released after each tick


def test_a_loop_that_never_ran_counts_the_schedule_from_the_newest_version(tmp_path,
                                                                          capsys):
    pushed = tmp_path / "work" / "model_repo" / "retrieval" / "7"
    pushed.mkdir(parents=True)  # `make train` just now
    assert tick(tmp_path, fake_pipeline(tmp_path)) == 0
    assert "nothing due" in capsys.readouterr().out
    os.utime(pushed, (time.time() - 8 * 86_400,) * 2)
    assert tick(tmp_path, fake_pipeline(tmp_path)) == 0
    assert "days ago; the schedule is every 7 days" in capsys.readouterr().out


def test_a_paused_loop_only_watches_and_resumes_when_told(tmp_path, capsys):
    loop = ["--dir", str(tmp_path / "loop")]
    assert controller.main([*loop, "pause", "--by", "ana", "--reason", "incident"]) == 0
    command = fake_pipeline(tmp_path)
    assert tick(tmp_path, command) == 0  # the schedule is due (never retrained)
    assert "paused by ana (incident)" in capsys.readouterr().out
    assert not (tmp_path / "work" / "model_repo").exists()
    assert controller.main([*loop, "resume", "--by", "ana"]) == 0
    assert tick(tmp_path, command) == 0
    assert (tmp_path / "work" / "model_repo" / "ranking" / "1").is_dir()
    assert [s["action"] for s in state_lib.history(tmp_path / "loop")] == [
        "pause", "resume", "retrain", "retrained"]


def test_a_person_taking_over_stops_a_running_retraining(tmp_path):
    command = fake_pipeline(tmp_path, seconds=30)
    codes = []
    runner = threading.Thread(target=lambda: codes.append(tick(
        tmp_path, command, lease_seconds=0.6)))  # renewed every 0.2 s
    runner.start()
    deadline = time.monotonic() + 20
    while state_lib.load(tmp_path / "loop").phase != "training":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert controller.main(["--dir", str(tmp_path / "loop"), "--lease-seconds", "60",
                            "take-over", "--by", "ana", "--reason", "bad data"]) == 0
    runner.join(30)
    assert codes == [3]
    assert not (tmp_path / "work" / "model_repo").exists()  # the run was stopped
    actions = [s["action"] for s in state_lib.history(tmp_path / "loop")]
    assert actions[-2:] == ["take over", "retraining stopped: the lease was taken over"]
    loop = state_lib.load(tmp_path / "loop")
    assert loop.paused and loop.paused_by == "ana"


def test_a_controller_restarted_mid_retraining_finishes_the_job(tmp_path, capsys):
    directory = tmp_path / "loop"
    trigger = triggers.Trigger("quality", "below its promise: ranking 3 rmse", "q.json")
    state_lib.save(directory, state_lib.LoopState(phase="training", since=NOW,
                                                  trigger=[trigger.to_dict()],
                                                  last_retrain=time.time()))
    assert tick(tmp_path, fake_pipeline(tmp_path)) == 0
    steps = state_lib.history(directory)
    assert [s["action"] for s in steps] == ["resumed after an interrupted retraining",
                                            "retrain", "retrained"]
    assert steps[1]["triggers"] == [trigger.to_dict()]
    assert state_lib.load(directory).phase == "idle"


def test_a_controller_stopped_mid_retraining_stops_it_and_frees_the_lease(tmp_path):
    """A tick's pod deleted on Kubernetes: SIGTERM. The retraining it runs (there, the
    command that follows the retrain Job and deletes it when stopped) stops too."""
    pid_file = tmp_path / "retraining.pid"
    script = tmp_path / "slow.py"
    script.write_text("import os, sys, time\n"
                      f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                      "time.sleep(120)\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.loop.controller", "--dir", str(tmp_path / "loop"),
         "tick", "--workdir", str(tmp_path / "work"),
         "--retrain-command", shlex.join([sys.executable, str(script)])], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 143
    finally:
        process.kill()
    retraining = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(retraining, 0)
    assert LeaseFile(tmp_path / "loop", 60).read() is None
    assert state_lib.load(tmp_path / "loop").phase == "training"  # the next tick resumes


def test_bad_reports_and_state_exit_2_naming_them(tmp_path, capsys):
    bad = tmp_path / "drift.json"
    bad.write_text("{not json")
    assert tick(tmp_path, "true", "--drift-report", str(bad)) == 2
    assert f"{bad}: cannot read" in capsys.readouterr().err
    (tmp_path / "loop" / "state.json").write_text('{"phase": "dreaming"}')
    assert tick(tmp_path, "true") == 2
    assert "field 'phase' must be one of" in capsys.readouterr().err
    (tmp_path / "loop" / "state.json").write_text('{"phase": "canary"}')
    assert tick(tmp_path, "true") == 2
    assert "a canary is running: tick needs --router" in capsys.readouterr().err
    assert tick(tmp_path, "true", "--router", "127.0.0.1:1", "--canary-steps", "50,5") == 2
    assert "--canary-steps must be growing percents" in capsys.readouterr().err
    assert tick(tmp_path, "true", "--router", "127.0.0.1:1", "--canary-margin", "2") == 2
    assert "--canary-margin must be between 0 and 1" in capsys.readouterr().err


def test_a_failed_retraining_is_exit_1_and_recorded(tmp_path, capsys):
    assert tick(tmp_path, fake_pipeline(tmp_path, exit_code=4)) == 1
    assert "retraining failed (exit 4)" in capsys.readouterr().err
    assert state_lib.history(tmp_path / "loop")[-1]["exit_code"] == 4
    assert state_lib.load(tmp_path / "loop").phase == "idle"


def test_the_timeline_gives_each_loop_its_phases_from_the_audit_log(tmp_path, capsys):
    steps = [
        {"time": NOW + 60, "action": "retrain", "triggers": [
            {"kind": "drift", "reason": "drift in age", "report": "d.json", "detected_at": NOW}]},
        {"time": NOW + 160, "action": "retrained", "pushed": {"ranking": 5}},
        {"time": NOW + 161, "action": "canary planned", "experiment": "canary-ranking-5"},
        {"time": NOW + 191, "action": "canary started"},
        {"time": NOW + 991, "action": "canary decided", "outcome": "promoted",
         "reasons": ["no worse"], "figures": {"share": 50}},
        {"time": NOW + 2000, "action": "retrain", "triggers": [
            {"kind": "schedule", "reason": "due", "report": "", "detected_at": NOW + 1990}]},
        {"time": NOW + 2050, "action": "retrain failed", "exit_code": 1}]
    first, second = timeline.loops(steps)
    assert first["seconds"] == {"reaction": 60, "retraining": 100, "loading": 30,
                                "canary": 800, "detection to decision": 991}
    assert first["outcome"] == "promoted" and first["pushed"] == {"ranking": 5}
    assert second["outcome"] == "retraining failed" and "canary" not in second["seconds"]
    for step in steps:
        state_lib.audit(tmp_path / "loop", "c1", **{k: v for k, v in step.items()
                                                     if k != "time"})
    assert controller.main(["--dir", str(tmp_path / "loop"), "timeline", "--out",
                            str(tmp_path / "out")]) == 0
    assert "loop 1 (drift, retrain started" in capsys.readouterr().out
    written = json.loads((tmp_path / "out" / "timeline.json").read_text())
    assert [e["outcome"] for e in written] == ["promoted", "retraining failed"]
    assert "<svg" in (tmp_path / "out" / "timeline.html").read_text()


def test_rolling_out_by_labels_needs_defaults_serving_the_stable_label(tmp_path):
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "ranking" base_path: "/m/ranking" '
                      'model_platform: "tensorflow" } }\n')
    target = rollout.Target("127.0.0.1:1", "127.0.0.1:2", "", None, models_config=config)
    with pytest.raises(ValueError, match="must serve the label 'stable'.*'ranking': 4"):
        rollout.plan(target, {"ranking": 5}, {"ranking": 4})
    plan = rollout.plan(target, {"ranking": 5}, {"ranking": "stable"})
    assert plan.promotion == "labels" and plan.stable == {"ranking": "stable"}
    [model] = model_config.read(config).model_config_list.config
    assert list(model.model_version_policy.specific.versions) == [5]  # joins the policy
