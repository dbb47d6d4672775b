"""Canary rollout of a new model version: a small, growing share of users, guarded.

  python -m pipelines.experiments.canary --router HOST:PORT --exposures DIR
      --model ranking --version N [--stable M] [--steps 1,5,25,50] [--step-seconds 300]
      [--min-requests 50] [--max-error-increase 0.01] [--max-p99-ratio 1.5]
      [--min-score-ratio 0.9] [--promotion defaults|labels]
      (the admin token comes from $RECSYS_ADMIN_TOKEN)

The plan, through the router's admin API: an experiment `canary-<model>-<version>` in
layer `canary` with two arms, `canary` (the new version) and `stable` (the one users get
now). At each step the canary's weight grows; it is the first arm, so a larger weight
only adds users to it, nobody flips back and forth. After each step's window the two arms
are compared from the exposure log: error rate (answers that fell back), p99 latency and
an online quality proxy (the mean score of the items the model served). A breach stops the
experiment at once, which puts every user back on stable: the rollback. When the last
step passes, the new version becomes the default for everyone (blue/green switch) and the
experiment stops: the promotion. With `--promotion labels` (Kubernetes) the controller
stops there and the delivery pipeline promotes by moving TF Serving's `stable` label.
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
import numpy as np

from recsys.v1 import experiments_pb2, experiments_pb2_grpc

LAYER = "canary"


@dataclass
class Plan:
    model: str  # retrieval | ranking
    version: int
    stable: int
    steps: list[float] = field(default_factory=lambda: [1, 5, 25, 50])  # canary percent
    step_seconds: float = 300.0
    min_requests: int = 50  # per arm and step, before a step can pass
    max_error_increase: float = 0.01  # fallback rate, canary minus stable
    max_p99_ratio: float = 1.5
    min_score_ratio: float = 0.9  # mean served score, canary over stable
    # defaults: the router's defaults switch to the new version (blue/green, local and
    # admin-API setups); labels: the delivery pipeline promotes by moving TF Serving's
    # `stable` label (Kubernetes, docs/deployment.md), the controller only reports
    promotion: str = "defaults"

    @property
    def key(self) -> str:
        return f"canary-{self.model}-{self.version}"


@dataclass
class ArmStats:
    requests: int
    error_rate: float
    p99_ms: float
    mean_score: float


def arm_stats(exposure_dir: Path, key: str, since: float, model: str
              ) -> dict[str, ArmStats]:
    """Per arm of experiment `key`, what the routers answered since `since`. The mean
    score counts only answers the arm's `model` gave (other layers' arms may skip it, and
    their scores are on another scale)."""
    answers: dict[str, list[dict]] = {}
    for path in Path(exposure_dir).glob("exposures-*.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["timestamp"] < since:
                continue
            for assignment in entry["assignments"]:
                if assignment["experiment"] == key:
                    answers.setdefault(assignment["arm"], []).append(entry)
    return {arm: ArmStats(
        requests=len(entries),
        error_rate=float(np.mean([e["fallback"] for e in entries])),
        p99_ms=float(np.percentile([e["latency_ms"] for e in entries], 99)),
        mean_score=float(np.mean([s for e in entries if e["model_versions"][model]
                                  for s in e.get("scores", [])] or [0])))
        for arm, entries in answers.items()}


def breaches(plan: Plan, canary: ArmStats, stable: ArmStats) -> list[str]:
    found = []
    if canary.error_rate - stable.error_rate > plan.max_error_increase:
        found.append(f"error rate {canary.error_rate:.3f} vs stable {stable.error_rate:.3f} "
                     f"(more than +{plan.max_error_increase})")
    if stable.p99_ms and canary.p99_ms / stable.p99_ms > plan.max_p99_ratio:
        found.append(f"p99 latency {canary.p99_ms:.1f} ms vs stable {stable.p99_ms:.1f} ms "
                     f"(more than {plan.max_p99_ratio}x)")
    if stable.mean_score and canary.mean_score and \
            canary.mean_score / stable.mean_score < plan.min_score_ratio:
        found.append(f"mean served score {canary.mean_score:.3f} vs stable "
                     f"{stable.mean_score:.3f} (under {plan.min_score_ratio}x)")
    return found


def experiment(plan: Plan, weight: float) -> experiments_pb2.Experiment:
    version_field = f"{plan.model}_version"
    message = experiments_pb2.Experiment(key=plan.key, layer=LAYER)
    message.arms.add(name="canary", weight=weight,
                     serves=experiments_pb2.Serving(**{version_field: plan.version}))
    message.arms.add(name="stable", weight=100 - weight,
                     serves=experiments_pb2.Serving(**{version_field: plan.stable}))
    return message


def run(plan: Plan, admin, token: str, exposure_dir: Path, progress=print,
        sleep=time.sleep) -> dict:
    """Carries the plan out; returns what happened (outcome, steps, reasons, timings)."""
    auth = (("authorization", f"Bearer {token}"),)
    started = time.time()
    steps = []
    for number, share in enumerate(plan.steps):
        if number == 0:
            admin.CreateExperiment(experiments_pb2.CreateExperimentRequest(
                experiment=experiment(plan, share)), metadata=auth)
        else:  # a planned ramp: users move from stable to canary only
            admin.UpdateExperiment(experiments_pb2.UpdateExperimentRequest(
                experiment=experiment(plan, share), force=True), metadata=auth)
        step_start = time.time()
        progress(f"canary {plan.key}: step {number + 1}/{len(plan.steps)}, {share}% of users")
        while True:
            sleep(min(plan.step_seconds, 1.0))
            stats = arm_stats(exposure_dir, plan.key, step_start, plan.model)
            canary, stable = stats.get("canary"), stats.get("stable")
            enough = canary and stable and \
                min(canary.requests, stable.requests) >= plan.min_requests
            if enough:
                reasons = breaches(plan, canary, stable)
                if reasons:  # roll back as soon as a breach shows, not at the step's end
                    admin.StopExperiment(experiments_pb2.ExperimentKey(key=plan.key),
                                         metadata=auth)
                    progress(f"canary {plan.key}: ROLLED BACK: {'; '.join(reasons)}")
                    steps.append({"share": share, "canary": vars(canary),
                                  "stable": vars(stable)})
                    return {"outcome": "rolled back", "reasons": reasons, "steps": steps,
                            "seconds_to_rollback": round(time.time() - started, 1)}
            if enough and time.time() - step_start >= plan.step_seconds:
                break
        steps.append({"share": share, "canary": vars(canary), "stable": vars(stable)})
    if plan.promotion == "labels":
        admin.StopExperiment(experiments_pb2.ExperimentKey(key=plan.key), metadata=auth)
        progress(f"canary {plan.key}: PASSED: promote version {plan.version} by moving "
                 f"the stable label (tools.model_labels promote {plan.model})")
        return {"outcome": "passed", "reasons": [], "steps": steps,
                "seconds_to_pass": round(time.time() - started, 1)}
    admin.SwitchDefaults(experiments_pb2.SwitchDefaultsRequest(
        defaults=experiments_pb2.Serving(**{f"{plan.model}_version": plan.version})),
        metadata=auth)
    admin.StopExperiment(experiments_pb2.ExperimentKey(key=plan.key), metadata=auth)
    progress(f"canary {plan.key}: PROMOTED: version {plan.version} serves everyone")
    return {"outcome": "promoted", "reasons": [], "steps": steps,
            "seconds_to_promote": round(time.time() - started, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", default="127.0.0.1:50051")
    parser.add_argument("--exposures", default="var/exposures",
                        help="the routers' exposure_log_dir")
    parser.add_argument("--model", choices=("retrieval", "ranking"), required=True)
    parser.add_argument("--version", type=int, required=True)
    parser.add_argument("--stable", type=int, default=0,
                        help="the version users get now (default: the router's default)")
    parser.add_argument("--steps", default="1,5,25,50")
    parser.add_argument("--step-seconds", type=float, default=300.0)
    parser.add_argument("--min-requests", type=int, default=50)
    parser.add_argument("--max-error-increase", type=float, default=0.01)
    parser.add_argument("--max-p99-ratio", type=float, default=1.5)
    parser.add_argument("--min-score-ratio", type=float, default=0.9)
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
    with grpc.insecure_channel(args.router) as channel:
        admin = experiments_pb2_grpc.ExperimentServiceStub(channel)
        try:
            stable = args.stable or getattr(admin.ListExperiments(
                experiments_pb2.ListExperimentsRequest(), timeout=10).defaults,
                f"{args.model}_version")
            if not stable or stable == args.version:
                parser.error("--stable: the router's default serves the newest version; "
                             "name the version users get now")
            plan = Plan(args.model, args.version, stable, steps, args.step_seconds,
                        args.min_requests, args.max_error_increase, args.max_p99_ratio,
                        args.min_score_ratio, args.promotion)
            result = run(plan, admin, os.environ.get("RECSYS_ADMIN_TOKEN", ""),
                         Path(args.exposures))
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    print(json.dumps(result, indent=2))
    return 0 if result["outcome"] in ("promoted", "passed") else 3


if __name__ == "__main__":
    sys.exit(main())
