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
The model server must keep the stable version loaded beside the new one (models.config
`latest { num_versions: 2 }`, or labels: docs/deployment.md).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from pipelines.experiments import canary
from recsys.v1 import experiments_pb2, experiments_pb2_grpc

LOAD_SECONDS = 1800.0  # a pushed version not loaded by then ends its canary


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

    def auth(self) -> tuple:
        return (("authorization", f"Bearer {self.token}"),)


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
                metadata=target.auth(), timeout=10)
    return {"stable": stable, "pinned": pins}


def plan(target: Target, candidate: dict[str, int], stable: dict) -> canary.Plan:
    return canary.Plan(dict(candidate), {m: stable[m] for m in candidate},
                       list(target.steps), target.step_seconds, target.min_requests,
                       margin=target.margin)


def loaded(target: Target, candidate: dict[str, int]) -> list[str]:
    """The pushed versions the model server does not serve yet."""
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
                return {"outcome": "rolled back", "steps": [], "seconds": 0.0,
                        "reasons": [f"not loaded by the model server after "
                                    f"{LOAD_SECONDS:.0f} s: {', '.join(missing)}"]}
            progress_line(f"waiting for the model server to load {', '.join(missing)}")
            return None
    with grpc.insecure_channel(target.router) as channel:
        result = canary.advance(the_plan, progress, _admin(channel), target.token,
                                target.logs, progress_line, now)
    state["progress"] = asdict(progress)
    return result


def new_state(the_plan: canary.Plan, now: float | None = None) -> dict:
    return {"plan": asdict(the_plan), "progress": asdict(canary.Progress()),
            "planned": time.time() if now is None else now}
