"""The loop's controller: retrains when drift, falling online quality or the schedule says
so, one loop at a time, every step in an audit log; a person can pause it or take over.

  python -m pipelines.loop.controller [--dir var/loop] COMMAND
    status                       phase, pause, lease holder, the last steps
    tick [--workdir var] [--drift-report F] [--quality-report F] [--retrain-days 7]
         [--retrain-command CMD] [--lease-seconds 3600] [--holder ID]
         [--router HOST:PORT --model-server HOST:PORT [--exposures DIR] [--outcomes DIR]
          [--canary-steps 5,25,50] [--canary-step-seconds 900] [--canary-margin 0.1]
          [--canary-min-requests 50] [--canary-max-p99-ratio 1.5] [--models-config FILE]]
                                 one step: take (or renew) the lease, then, unless
                                 paused, look at the running canary, or retrain if a
                                 trigger holds
    timeline [--out reports/loop]      per retraining: detection, reaction, retraining,
                                 loading, canary, decision (JSON and HTML; timeline.py)
    pause --by NAME [--reason TEXT]    the controller only watches until resumed
    resume --by NAME
    take-over --by NAME [--reason TEXT]  the lease passes to NAME whoever holds it, and
                                 the loop pauses: a person is in charge

Retraining (`--retrain-command`, default `python -m pipelines.loop.retrain --workdir
WORKDIR`: the feature job over everything landed, ingestion, a new training set, the
pipeline) records which versions it pushed (the newest in the model repository, before
and after) or why the gates refused.
With `--router` (the admin token in $RECSYS_ADMIN_TOKEN) the loop also rolls them out
(rollout.py): it pins what users get before retraining, canaries the pushed versions on
outcomes, one look per tick, and promotes them (the router's defaults, or with
`--models-config` the `stable` label) or rolls them back.
Without it the rollout is the deployment's (docs/deployment.md). Exit codes: 0 done, 1 the
retraining failed or the stack did not answer, 2 bad input (a malformed report or state,
named in one line), 3 another controller holds the lease, or a person took it over
mid-retraining.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc

from libs import feature_spec
from pipelines.experiments import canary
from pipelines.loop import rollout, state as state_lib, timeline, triggers
from pipelines.loop.lease import LeaseFile, LeaseHeld

ROOT = Path(__file__).resolve().parents[2]
MODELS = (feature_spec.MODEL_NAMES.retrieval, feature_spec.MODEL_NAMES.ranking)


def last_push(workdir: Path) -> float:
    """When the newest model version reached the repository (its directory's time; 0
    when there is none): a loop that never retrained counts from there, so a first tick
    right after `make train` finds the schedule not yet due."""
    times = [p.stat().st_mtime for model in MODELS
             for p in (workdir / "model_repo" / model).glob("*") if p.name.isdigit()]
    return max(times, default=0.0)


def newest_versions(workdir: Path) -> dict[str, int]:
    """The newest version of each model in the repository (0 when none)."""
    out = {}
    for model in MODELS:
        versions = [int(p.name) for p in (workdir / "model_repo" / model).glob("*")
                    if p.name.isdigit()]
        out[model] = max(versions, default=0)
    return out


def run_holding(command: str, log: Path, lease: LeaseFile, holder: str) -> int | None:
    """Runs `command`, renewing the lease meanwhile; None (and the command stopped) when
    the lease was lost: someone took over."""
    with open(log, "a", encoding="utf-8") as out:
        child = subprocess.Popen(shlex.split(command), cwd=ROOT, stdout=out,
                                 stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    return child.wait(timeout=lease.seconds / 3)
                except subprocess.TimeoutExpired:
                    try:
                        lease.acquire(holder)
                    except LeaseHeld:
                        child.terminate()
                        child.wait()
                        return None
        except BaseException:  # this controller is stopped (SIGTERM): so is the retraining
            child.terminate()
            child.wait()
            raise


def retrain(args, loop: state_lib.LoopState, lease: LeaseFile, found: list) -> int:
    """Runs the pipeline; records the versions it pushed, or why the gates refused."""
    actor = args.holder
    directory, workdir = Path(args.dir), Path(args.workdir)
    before = newest_versions(workdir)
    if args.target:  # users stay on what they have until the canary says otherwise
        pinned = rollout.pin(args.target, before)["pinned"]
        if pinned:
            state_lib.audit(directory, actor, "pinned defaults", versions=pinned)
    loop.phase, loop.since, loop.trigger = "training", time.time(), [t.to_dict() for t in found]
    state_lib.save(directory, loop)
    state_lib.audit(directory, actor, "retrain", triggers=loop.trigger,
                    command=args.retrain_command)
    print(f"retraining: {'; '.join(t.reason for t in found)}", flush=True)
    log = directory / "retrain.log"
    code = run_holding(args.retrain_command, log, lease, actor)
    if code is None:  # taken over: the person in charge decides what happens next
        state_lib.audit(directory, actor, "retraining stopped: the lease was taken over")
        print("stopped: the loop was taken over", file=sys.stderr)
        return 3
    loop = state_lib.load(directory)  # a pause may have come meanwhile
    loop.phase, loop.since = "idle", time.time()
    if code != 0:
        state_lib.save(directory, loop)
        state_lib.audit(directory, actor, "retrain failed", exit_code=code, log=str(log))
        print(f"error: retraining failed (exit {code}); its output: {log}", file=sys.stderr)
        return 1
    after = newest_versions(workdir)
    pushed = {m: v for m, v in after.items() if v > before[m]}
    summary = _last_run(workdir)
    refused = {m: summary.get(m, {}).get("final_gate", {}).get("reasons", [])
               for m in MODELS if m not in pushed}
    loop.last_retrain, loop.candidate = time.time(), pushed
    state_lib.save(directory, loop)
    state_lib.audit(directory, actor, "retrained", pushed=pushed, refused=refused,
                    training_set=summary.get("snapshot", {}).get("training_set"))
    print(f"retrained: pushed {pushed or 'nothing'}"
          + "".join(f"; {m} not pushed: {'; '.join(r) or 'no newer version'}"
                    for m, r in refused.items()))
    if args.target and pushed:
        plan_canary(args, loop, pushed)
    return 0


def plan_canary(args, loop: state_lib.LoopState, pushed: dict[str, int]) -> None:
    """The pushed versions users do not get yet go to a canary (a first model ever
    pushed just serves: there is nothing to compare it with)."""
    directory = Path(args.dir)
    stable = rollout.pin(args.target, pushed)["stable"]
    candidate = {m: v for m, v in pushed.items() if stable[m] != v}
    if not candidate:
        return
    plan = rollout.plan(args.target, candidate, stable)
    loop.phase, loop.since, loop.canary = "canary", time.time(), rollout.new_state(plan)
    state_lib.save(directory, loop)
    state_lib.audit(directory, args.holder, "canary planned", experiment=plan.key,
                    candidate=candidate, stable=plan.stable, steps=plan.steps,
                    step_seconds=plan.step_seconds, margin=plan.margin)
    print(f"canary {plan.key}: {candidate} against {plan.stable}, once loaded")


def look_at_canary(args, loop: state_lib.LoopState) -> int:
    """One look; on a decision, the audit log gets it with the figures."""
    directory = Path(args.dir)
    waiting = loop.canary["progress"]["step"] < 0
    result = rollout.look(args.target, loop.canary)
    loop = _reload_keeping(directory, loop)
    plan = canary.Plan(**loop.canary["plan"])
    if waiting and loop.canary["progress"]["step"] >= 0:
        state_lib.audit(directory, args.holder, "canary started", experiment=plan.key)
    if result is None:
        state_lib.save(directory, loop)
        return 0
    state_lib.audit(directory, args.holder, "canary decided", experiment=plan.key,
                    outcome=result["outcome"], reasons=result["reasons"],
                    candidate=plan.candidate, stable=plan.stable,
                    seconds=result["seconds"],
                    figures=result["steps"][-1] if result["steps"] else {})
    loop.phase, loop.since, loop.canary = "idle", time.time(), {}
    state_lib.save(directory, loop)
    return 0


def _reload_keeping(directory: Path, loop: state_lib.LoopState) -> state_lib.LoopState:
    """The state on disk (a pause may have come meanwhile) with this tick's canary."""
    fresh = state_lib.load(directory)
    fresh.canary = loop.canary
    return fresh


def _last_run(workdir: Path) -> dict:
    try:
        return json.loads((workdir / "last_run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def tick(args) -> int:
    directory = Path(args.dir)
    lease = LeaseFile(directory, args.lease_seconds)
    try:
        lease.acquire(args.holder)
    except LeaseHeld as err:
        print(f"not running: {err}", file=sys.stderr)
        return 3
    try:
        return _step(args, lease)
    finally:
        lease.release(args.holder)  # the next tick (another process) may run at once


def _step(args, lease: LeaseFile) -> int:
    directory = Path(args.dir)
    loop = state_lib.load(directory)
    if loop.paused:
        print(f"paused by {loop.paused_by} ({loop.pause_reason or 'no reason given'}): "
              "watching only")
        return 0
    if loop.phase == "canary":
        if not args.target:
            raise ValueError("a canary is running: tick needs --router and --model-server")
        return look_at_canary(args, loop)
    if loop.phase == "training":  # this controller (or one before it) stopped mid-run
        state_lib.audit(directory, args.holder, "resumed after an interrupted retraining",
                        since=loop.since)
    found = triggers.due(_path(args.drift_report), _path(args.quality_report),
                         loop.last_retrain or last_push(Path(args.workdir)),
                         args.retrain_days, time.time())
    if loop.phase == "training" and not found:
        found = [triggers.Trigger(**t) for t in loop.trigger]
    if not found:
        print("nothing due")
        return 0
    return retrain(args, loop, lease, found)


def _path(value: str) -> Path | None:
    return Path(value) if value else None


def pause(args, paused: bool) -> int:
    directory = Path(args.dir)
    loop = state_lib.load(directory)
    loop.paused, loop.paused_by = paused, args.by if paused else ""
    loop.pause_reason = getattr(args, "reason", "") if paused else ""
    state_lib.save(directory, loop)
    state_lib.audit(directory, args.by, "pause" if paused else "resume",
                    reason=loop.pause_reason)
    print(f"{'paused' if paused else 'resumed'} by {args.by}")
    return 0


def take_over(args) -> int:
    directory = Path(args.dir)
    lease = LeaseFile(directory, args.lease_seconds)
    taken = lease.acquire(args.by, force=True)
    loop = state_lib.load(directory)
    loop.paused, loop.paused_by = True, args.by
    loop.pause_reason = args.reason or "taken over"
    state_lib.save(directory, loop)
    state_lib.audit(directory, args.by, "take over", reason=loop.pause_reason,
                    from_holder=taken.taken_over_from)
    print(f"{args.by} holds the loop (from {taken.taken_over_from or 'nobody'}); it stays "
          f"paused until `resume`")
    return 0


def status(args) -> int:
    directory = Path(args.dir)
    loop = state_lib.load(directory)
    held = LeaseFile(directory, args.lease_seconds).read()
    print(json.dumps({"phase": loop.phase, "paused": loop.paused, "paused_by": loop.paused_by,
                      "last_retrain": loop.last_retrain, "candidate": loop.candidate,
                      "canary": loop.canary,
                      "lease": held.__dict__ if held else None,
                      "last_steps": state_lib.history(directory)[-5:]}, indent=2))
    return 0


def show_timeline(args) -> int:
    entries = timeline.write(state_lib.history(Path(args.dir)), Path(args.out))
    print("\n".join(timeline.summary(entries)) or "the loop has not retrained yet")
    print(f"report: {Path(args.out) / 'timeline.html'}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="var/loop", help="state, lease and audit log")
    p.add_argument("--lease-seconds", type=float, default=3600.0,
                   help="how long a lease lasts without renewal (longer than a retraining)")
    commands = p.add_subparsers(dest="command", required=True)
    commands.add_parser("status")
    commands.add_parser("timeline").add_argument("--out", default="reports/loop")
    step = commands.add_parser("tick")
    step.add_argument("--workdir", default="var")
    step.add_argument("--drift-report", default="", help="drift.json of the drift check")
    step.add_argument("--quality-report", default="",
                      help="quality.json of the online quality check")
    step.add_argument("--retrain-days", type=float, default=7.0,
                      help="retrain when the last retraining is older (0: never)")
    step.add_argument("--retrain-command", default="",
                      help="default: pipelines.loop.retrain on --workdir (features, "
                           "training set, pipeline)")
    step.add_argument("--holder", default=f"{socket.gethostname()}-{os.getpid()}-"
                      f"{uuid.uuid4().hex[:6]}", help="this controller's name in the lease")
    step.add_argument("--router", default="",
                      help="the router's address: roll pushed versions out through it "
                           "(empty: the deployment rolls them out)")
    step.add_argument("--model-server", default="127.0.0.1:8500",
                      help="where the pushed versions load (checked before a canary)")
    step.add_argument("--exposures", default="", help="default: WORKDIR/exposures")
    step.add_argument("--outcomes", default="", help="default: WORKDIR/outcomes")
    step.add_argument("--canary-steps", default="5,25,50", help="canary percents")
    step.add_argument("--canary-step-seconds", type=float, default=900.0)
    step.add_argument("--canary-min-requests", type=int, default=50)
    step.add_argument("--canary-margin", type=float, default=0.1)
    step.add_argument("--canary-max-p99-ratio", type=float, default=1.5,
                      help="latency guardrail: roll back when the canary's p99 exceeds "
                           "stable's by this factor")
    step.add_argument("--models-config", default="",
                      help="the model server's models.config: roll out by version labels")
    for name in ("pause", "resume", "take-over"):
        command = commands.add_parser(name)
        command.add_argument("--by", required=True, help="who (goes to the audit log)")
        if name != "resume":
            command.add_argument("--reason", default="")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "tick":
        if not args.retrain_command:
            args.retrain_command = shlex.join([sys.executable, "-m", "pipelines.loop.retrain",
                                               "--workdir", args.workdir])
    try:
        if args.command == "tick":
            args.target = target(args)
            return tick(args)
        if args.command in ("pause", "resume"):
            return pause(args, args.command == "pause")
        if args.command == "take-over":
            return take_over(args)
        if args.command == "timeline":
            return show_timeline(args)
        return status(args)
    except (state_lib.StateError, triggers.ReportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except grpc.RpcError as err:
        print(f"error: the stack answered {err.code().name}: {err.details()}",
              file=sys.stderr)
        return 1


def target(args) -> rollout.Target | None:
    if not args.router:
        return None
    try:
        steps = tuple(float(s) for s in args.canary_steps.split(","))
    except ValueError:
        steps = ()
    if not steps or not all(0 < s < 100 for s in steps) or list(steps) != sorted(steps):
        raise ValueError(f"--canary-steps must be growing percents between 0 and 100, "
                         f"got {args.canary_steps!r}")
    if not 0 < args.canary_margin < 1:
        raise ValueError(f"--canary-margin must be between 0 and 1, got {args.canary_margin}")
    if not args.canary_max_p99_ratio >= 1:
        raise ValueError(f"--canary-max-p99-ratio must be at least 1, "
                         f"got {args.canary_max_p99_ratio}")
    workdir = Path(args.workdir)
    return rollout.Target(
        args.router, args.model_server, os.environ.get("RECSYS_ADMIN_TOKEN", ""),
        canary.Logs(Path(args.exposures or workdir / "exposures"),
                    Path(args.outcomes or workdir / "outcomes")),
        steps, args.canary_step_seconds, args.canary_min_requests, args.canary_margin,
        Path(args.models_config) if args.models_config else None,
        args.canary_max_p99_ratio)


if __name__ == "__main__":
    # stopped (a pod deleted: SIGTERM), the process unwinds: the lease is released and a
    # retraining this tick runs stops too; the next tick resumes from the saved phase
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
