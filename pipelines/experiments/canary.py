"""Canary rollout of new model versions: a small, growing share of users, judged on what
they do with the answers.

  python -m pipelines.experiments.canary --router HOST:PORT --exposures DIR --outcomes DIR
      --model ranking --version N [--stable M] [--steps 1,5,25,50] [--step-seconds 300]
      [--min-requests 50] [--min-users 20] [--max-error-increase 0.01]
      [--max-p99-ratio 1.5] [--margin 0.1] [--promotion defaults|labels]
      (the admin token comes from $RECSYS_ADMIN_TOKEN)

The plan, through the router's admin API: an experiment `canary-<model>-<version>` in
layer `canary` with two arms, `canary` (the new versions) and `stable` (what users get
now). At each step the canary's weight grows; it is the first arm, so a larger weight only
adds users to it, nobody flips back and forth. Each look judges the current step with the
canary decision (canary_decision.py) on the exposure log and the outcome events: guardrails
(fallback rate, p99 latency), the sample ratio, and the always-valid interval of canary
minus stable on per-user conversion. Only users first seen in the step count, so each
step's users were split by that step's weights (the sample ratio test stays exact). A
rollback stops the experiment, which puts every user back on stable; it can come at any
look. The promotion comes only at the end of the last step, when the canary is shown no
worse than the margin: the new versions become the defaults (blue/green switch) and the
experiment stops. With `--promotion labels` (Kubernetes) it stops there and the delivery
pipeline promotes by moving TF Serving's `stable` label.

`advance` takes one look and keeps where the canary stands in a `Progress`, so a
controller that persists it (pipelines/loop) survives its own restart mid-canary.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pandas as pd

from pipelines.experiments import analysis, canary_decision, exposures as logs
from recsys.v1 import experiments_pb2, experiments_pb2_grpc

LAYER = "canary"
PATIENCE = 3  # a last step without enough traffic waits this many step lengths, then ends


@dataclass
class Plan:
    candidate: dict[str, int]  # model (retrieval | ranking) -> version the canary serves
    stable: dict[str, int | str]  # model -> version (or label) users get now
    steps: list[float] = field(default_factory=lambda: [1, 5, 25, 50])  # canary percent
    step_seconds: float = 300.0
    min_requests: int = 50  # per arm and step, before a step is judged
    min_users: int = 20  # per arm, before the sequential test looks
    max_error_increase: float = 0.01  # fallback rate, canary minus stable
    max_p99_ratio: float = 1.5
    margin: float = 0.1  # promoted only if shown no worse than stable by more, relative
    alpha: float = 0.05
    # defaults: the router's defaults switch to the new versions (blue/green, local and
    # admin-API setups); labels: the delivery pipeline promotes by moving TF Serving's
    # `stable` label (Kubernetes, docs/deployment.md), the canary only reports
    promotion: str = "defaults"

    @property
    def key(self) -> str:
        return "canary-" + "-".join(f"{m}-{v}" for m, v in sorted(self.candidate.items()))


@dataclass
class Progress:
    """Where a canary stands; plain data, so a controller can keep it on disk."""
    step: int = -1  # index into plan.steps; -1: not started
    step_start: float = 0.0
    started: float = 0.0
    steps: list[dict] = field(default_factory=list)  # per step passed: share, figures


@dataclass
class Logs:
    exposures: Path  # the routers' exposure_log_dir
    outcomes: Path  # their outcome_log_dir


def _serving(versions: dict) -> experiments_pb2.Serving:
    return experiments_pb2.Serving(**{
        f"{model}_version" + ("_label" if isinstance(v, str) else ""): v
        for model, v in versions.items()})


def experiment(plan: Plan, weight: float) -> experiments_pb2.Experiment:
    message = experiments_pb2.Experiment(key=plan.key, layer=LAYER)
    message.arms.add(name="canary", weight=weight, serves=_serving(plan.candidate))
    message.arms.add(name="stable", weight=100 - weight, serves=_serving(plan.stable))
    return message


def _read(spec: Path, since: float, reader) -> pd.DataFrame | None:
    """The records of the log files written since `since` (older files cannot hold the
    step's records), or None when there are none yet."""
    paths = [p for p in spec.glob("*.jsonl") if p.stat().st_mtime >= since]
    if not paths:
        return None
    return reader(paths)


def step_data(plan: Plan, log: Logs, since: float
              ) -> tuple[pd.DataFrame, logs.Joined] | None:
    """The experiment's answers since `since` (the step's start) and their joined
    outcomes; None when an arm has fewer than `min_requests` answers."""
    frame = _read(log.exposures, since, lambda paths: logs.exposures_frame(
        r for p in paths for r in logs.json_lines(p)))
    if frame is None:
        return None
    frame = frame[frame.assignments.map(lambda a: plan.key in a)
                  & (frame.timestamp >= since)]
    counts = frame.assignments.map(lambda a: a[plan.key]).value_counts()
    if min(counts.get("canary", 0), counts.get("stable", 0)) < plan.min_requests:
        return None
    outcomes = _read(log.outcomes, since, lambda paths: logs.outcomes_frame(
        r for p in paths for r in logs.json_lines(p)))
    if outcomes is None:
        outcomes = logs.outcomes_frame([])
    return frame.reset_index(drop=True), logs.join(frame, outcomes)


def judge(plan: Plan, share: float, data, final: bool) -> canary_decision.Decision:
    frame, joined = data
    settings = analysis.Settings(
        alpha=plan.alpha, control="stable", looks=10, min_users_per_arm=plan.min_users,
        fallback_margin=plan.max_error_increase, latency_margin=plan.max_p99_ratio - 1)
    result = analysis.analyze(frame, joined, plan.key,
                              {"canary": share, "stable": 100 - share}, settings)
    return canary_decision.decide(result, canary_decision.Rules(margin=plan.margin), final)


def admin_auth(token: str) -> tuple:
    """The metadata the router's admin API checks an editor's token in."""
    return (("authorization", f"Bearer {token}"),)


def advance(plan: Plan, progress: Progress, admin, token: str, log: Logs,
            progress_line=print, now: float | None = None) -> dict | None:
    """One look: starts the canary, or judges its step and then ramps, rolls back or
    promotes. Returns what happened once the canary has ended, else None."""
    now = time.time() if now is None else now
    auth = admin_auth(token)
    if progress.step < 0:
        admin.CreateExperiment(experiments_pb2.CreateExperimentRequest(
            experiment=experiment(plan, plan.steps[0])), metadata=auth)
        progress.step, progress.step_start, progress.started = 0, now, now
        progress_line(f"canary {plan.key}: step 1/{len(plan.steps)}, "
                      f"{plan.steps[0]}% of users")
        return None
    share = plan.steps[progress.step]
    last = progress.step == len(plan.steps) - 1
    elapsed = now - progress.step_start
    data = step_data(plan, log, progress.step_start)
    if data is None:
        if last and elapsed >= PATIENCE * plan.step_seconds:
            return _end(plan, progress, admin, auth, "rolled back", now, progress_line, [
                f"too little traffic: fewer than {plan.min_requests} answers per arm in "
                f"{elapsed:.0f} s"], {})
        return None
    decision = judge(plan, share, data, final=last and elapsed >= plan.step_seconds)
    figures = {"share": share, "seconds": round(elapsed, 1), **decision.figures}
    if decision.action == "rollback":
        return _end(plan, progress, admin, auth, "rolled back", now, progress_line,
                    decision.reasons, figures)
    if decision.action == "promote":
        return _end(plan, progress, admin, auth, "promoted", now, progress_line,
                    decision.reasons, figures)
    if not last and elapsed >= plan.step_seconds:  # a planned ramp: stable -> canary only
        progress.steps.append(figures)
        progress.step += 1
        progress.step_start = now
        admin.UpdateExperiment(experiments_pb2.UpdateExperimentRequest(
            experiment=experiment(plan, plan.steps[progress.step]), force=True),
            metadata=auth)
        progress_line(f"canary {plan.key}: step {progress.step + 1}/{len(plan.steps)}, "
                      f"{plan.steps[progress.step]}% of users")
    return None


def _end(plan: Plan, progress: Progress, admin, auth, outcome: str, now: float,
         progress_line, reasons: list[str], figures: dict) -> dict:
    progress.steps.append(figures)
    promoted = outcome == "promoted"
    if promoted and plan.promotion == "defaults":
        admin.SwitchDefaults(experiments_pb2.SwitchDefaultsRequest(
            defaults=_serving(plan.candidate)), metadata=auth)
    admin.StopExperiment(experiments_pb2.ExperimentKey(key=plan.key), metadata=auth)
    if promoted and plan.promotion == "labels":
        outcome = "passed"
        line = ("PASSED: promote by moving the stable label (tools.model_labels promote "
                + ", ".join(plan.candidate) + ")")
    elif promoted:
        line = f"PROMOTED: {plan.candidate} serves everyone"
    else:
        line = "ROLLED BACK"
    progress_line(f"canary {plan.key}: {line}: {'; '.join(reasons)}")
    return {"outcome": outcome, "reasons": reasons, "steps": progress.steps,
            "seconds": round(now - progress.started, 1)}


def run(plan: Plan, admin, token: str, log: Logs, progress_line=print,
        sleep=time.sleep, look_seconds: float = 1.0) -> dict:
    """Carries the plan out, one look every `look_seconds`; returns what happened."""
    progress = Progress()
    while True:
        result = advance(plan, progress, admin, token, log, progress_line)
        if result is not None:
            return result
        sleep(min(plan.step_seconds, look_seconds))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", default="127.0.0.1:50051")
    parser.add_argument("--exposures", default="var/exposures",
                        help="the routers' exposure_log_dir")
    parser.add_argument("--outcomes", default="var/outcomes",
                        help="the routers' outcome_log_dir")
    parser.add_argument("--model", choices=("retrieval", "ranking"), required=True)
    parser.add_argument("--version", type=int, required=True)
    parser.add_argument("--stable", type=int, default=0,
                        help="the version users get now (default: the router's default)")
    parser.add_argument("--steps", default="1,5,25,50")
    parser.add_argument("--step-seconds", type=float, default=300.0)
    parser.add_argument("--min-requests", type=int, default=50)
    parser.add_argument("--min-users", type=int, default=20)
    parser.add_argument("--max-error-increase", type=float, default=0.01)
    parser.add_argument("--max-p99-ratio", type=float, default=1.5)
    parser.add_argument("--margin", type=float, default=0.1,
                        help="promote only if conversion is shown no worse than stable's "
                             "by more than this share")
    parser.add_argument("--promotion", choices=("defaults", "labels"), default="defaults",
                        help="defaults: switch the router's defaults to the version; "
                             "labels: stop and leave promotion to TF Serving's labels")
    args = parser.parse_args(argv)
    try:
        steps = [float(s) for s in args.steps.split(",")]
    except ValueError:
        parser.error(f"--steps must be percents separated by commas, got {args.steps!r}")
    if not all(0 < s < 100 for s in steps) or steps != sorted(steps):
        parser.error("--steps must grow, each between 0 and 100 (exclusive)")
    if not 0 < args.margin < 1:
        parser.error(f"--margin must be between 0 and 1, got {args.margin}")
    with grpc.insecure_channel(args.router) as channel:
        admin = experiments_pb2_grpc.ExperimentServiceStub(channel)
        try:
            stable = args.stable or getattr(admin.ListExperiments(
                experiments_pb2.ListExperimentsRequest(), timeout=10).defaults,
                f"{args.model}_version")
            if not stable or stable == args.version:
                parser.error("--stable: the router's default serves the newest version; "
                             "name the version users get now")
            plan = Plan({args.model: args.version}, {args.model: stable}, steps,
                        args.step_seconds, args.min_requests, args.min_users,
                        args.max_error_increase, args.max_p99_ratio, args.margin,
                        promotion=args.promotion)
            result = run(plan, admin, os.environ.get("RECSYS_ADMIN_TOKEN", ""),
                         Logs(Path(args.exposures), Path(args.outcomes)))
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
        except logs.InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(json.dumps(result, indent=2))
    return 0 if result["outcome"] in ("promoted", "passed") else 3


if __name__ == "__main__":
    sys.exit(main())
