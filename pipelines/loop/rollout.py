"""The loop's rollout of what a retraining pushed: keep users on what they have, canary the
new versions on outcomes, then promote or roll back (pipelines/experiments/canary.py).

Through the router's admin API, so the same steps work wherever a router runs:
  pin       before a retraining, a model the router serves as "the newest version" (its
            default 0) is pinned to the version serving now; else the push itself would
            reach every user, with no canary
  start     once the model server has loaded every pushed version (a canary of a version
            still loading would only see fallbacks), the canary experiment starts
  look      one look of the canary per controller tick; its progress is in the loop's
            state, so a restarted controller goes on where the last one stopped
The model server must keep the stable version loaded beside the new one: by versions
(models.config `latest { num_versions: 2 }`; promotion moves the router's defaults), or
by labels (`models_config`, the router's defaults serving the label `stable`): the pushed
versions join the file's policy, `canary` names them once loaded, and promotion moves
`stable` to them (rollback removes `canary` and unloads them), as tools/model_labels.py
does for a person (docs/deployment.md).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from pipelines.experiments import canary
from recsys.v1 import experiments_pb2, experiments_pb2_grpc

LOAD_SECONDS = 1800.0  # a pushed version not loaded by then ends its canary
STABLE, CANARY = "stable", "canary"  # the labels (libs/model_labels.py)


def _labels():
    """libs.model_labels, imported when a look needs it: TF Serving's protos import all
    of TensorFlow (seconds), which most ticks of a canary never use."""
    from libs import model_labels
    return model_labels


@dataclass
class Target:
    """The stack the controller rolls out to, and how its canaries run."""
    router: str
    model_server: str
    token: str
    logs: canary.Logs
    steps: tuple[float, ...] = (5, 25, 50)
    step_seconds: float = 900.0
    min_requests: int = 50
    margin: float = 0.1
    models_config: Path | None = None  # labels mode: the model server's models.config
    max_p99_ratio: float = 1.5  # the latency guardrail: canary p99 / stable p99


def _admin(channel) -> experiments_pb2_grpc.ExperimentServiceStub:
    return experiments_pb2_grpc.ExperimentServiceStub(channel)


def pin(target: Target, newest: dict[str, int]) -> dict[str, int | str]:
    """What each model's users get now, pinning "the newest" to `newest`; the pins made
    are returned under "pinned"."""
    with grpc.insecure_channel(target.router) as channel:
        admin = _admin(channel)
        defaults = admin.ListExperiments(experiments_pb2.ListExperimentsRequest(),
                                         timeout=10).defaults
        stable, pins = {}, {}
        for model, version in newest.items():
            label = getattr(defaults, f"{model}_version_label")
            stable[model] = label or getattr(defaults, f"{model}_version") or version
            if not label and not getattr(defaults, f"{model}_version") and version:
                pins[model] = version
        if pins:
            admin.SwitchDefaults(experiments_pb2.SwitchDefaultsRequest(
                defaults=experiments_pb2.Serving(**{f"{m}_version": v
                                                    for m, v in pins.items()})),
                metadata=canary.admin_auth(target.token), timeout=10)
    return {"stable": stable, "pinned": pins}


def plan(target: Target, candidate: dict[str, int], stable: dict) -> canary.Plan:
    """The canary of `candidate` against `stable`; by labels, the pushed versions join
    the model server's policy first."""
    stable = {m: stable[m] for m in candidate}
    if target.models_config:
        wrong = {m: s for m, s in stable.items() if s != STABLE}
        if wrong:
            raise ValueError(f"--models-config: the router's defaults must serve the label "
                             f"{STABLE!r} to roll out by labels; they serve {wrong}")
        for model, version in candidate.items():
            _labels().edit(target.models_config, "load", model, version=str(version))
    return canary.Plan(dict(candidate), stable, list(target.steps), target.step_seconds,
                       target.min_requests, max_p99_ratio=target.max_p99_ratio,
                       margin=target.margin,
                       promotion="labels" if target.models_config else "defaults")


def _move_labels(target: Target, the_plan: canary.Plan, result: dict) -> dict:
    """By labels, a passed canary's versions become `stable`; any other ends with
    `canary` removed and only stable's version loaded."""
    if not target.models_config:
        return result
    passed = result["outcome"] == "passed"
    for model in the_plan.candidate:
        _labels().edit(target.models_config, "promote" if passed else "rollback", model)
    if passed:
        return {**result, "outcome": "promoted", "reasons": [
            *result["reasons"], f"label stable moved to {the_plan.candidate}"]}
    return result


def loaded(target: Target, candidate: dict[str, int]) -> list[str]:
    """The pushed versions the model server does not serve yet."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
    missing = []
    with grpc.insecure_channel(target.model_server) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        for model, version in candidate.items():
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = model
            request.model_spec.version.value = version
            try:
                status = stub.GetModelStatus(request, timeout=10).model_version_status
                ready = any(s.state == s.AVAILABLE for s in status)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                ready = False
            if not ready:
                missing.append(f"{model} {version}")
    return missing


def look(target: Target, state: dict, progress_line=print, now: float | None = None
         ) -> dict | None:
    """One look at the canary in `state` ({"plan", "progress", "planned"}, updated in
    place); what happened once it has ended, else None."""
    now = time.time() if now is None else now
    the_plan = canary.Plan(**state["plan"])
    progress = canary.Progress(**state["progress"])
    if progress.step < 0:
        missing = loaded(target, the_plan.candidate)
        if missing:
            if now - state["planned"] > LOAD_SECONDS:
                return _move_labels(target, the_plan, {
                    "outcome": "rolled back", "steps": [], "seconds": 0.0,
                    "reasons": [f"not loaded by the model server after {LOAD_SECONDS:.0f} "
                                f"s: {', '.join(missing)}"]})
            progress_line(f"waiting for the model server to load {', '.join(missing)}")
            return None
        if target.models_config:  # loaded: the label can name it
            for model, version in the_plan.candidate.items():
                _labels().edit(target.models_config, "set", model, CANARY, str(version))
    with grpc.insecure_channel(target.router) as channel:
        result = canary.advance(the_plan, progress, _admin(channel), target.token,
                                target.logs, progress_line, now)
    state["progress"] = asdict(progress)
    return None if result is None else _move_labels(target, the_plan, result)


def new_state(the_plan: canary.Plan, now: float | None = None) -> dict:
    return {"plan": asdict(the_plan), "progress": asdict(canary.Progress()),
            "planned": time.time() if now is None else now}
