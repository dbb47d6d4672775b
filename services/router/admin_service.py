"""ExperimentService over gRPC: proto <-> document conversion, tokens, status codes. The
changes themselves are experiment_admin.py's."""
from __future__ import annotations

import grpc

from libs.experiments import ExperimentSource, Serving
from recsys.v1 import experiments_pb2, experiments_pb2_grpc
from services.router.experiment_admin import AdminError, AdminTokens, ExperimentDocument

SERVING_FIELDS = [f for f in Serving.__dataclass_fields__]


def experiment_to_proto(layer: str, experiment: dict) -> experiments_pb2.Experiment:
    traffic = experiment.get("traffic", [0, 100])
    message = experiments_pb2.Experiment(
        key=experiment["key"], layer=layer, traffic_from=traffic[0], traffic_to=traffic[1],
        salt=experiment.get("salt", ""), status=experiment.get("status", "running"),
        start=experiment.get("start", ""), stop=experiment.get("stop", ""),
        allowlist=experiment.get("allowlist", {}))
    for name, values in experiment.get("targeting", {}).items():
        message.targeting[name].values.extend(values)
    for arm in experiment.get("arms", []):
        message.arms.add(name=arm["name"], weight=arm["weight"],
                         serves=serving_to_proto(arm.get("serves", {})))
    return message


def serving_to_proto(serves: dict) -> experiments_pb2.Serving:
    return experiments_pb2.Serving(**serves)


def serving_from_proto(message: experiments_pb2.Serving) -> dict:
    return {f: getattr(message, f) for f in SERVING_FIELDS if message.HasField(f)}


def experiment_from_proto(message: experiments_pb2.Experiment) -> tuple[str, dict]:
    if not message.layer:
        raise AdminError("INVALID_ARGUMENT", "field 'layer' is empty")
    experiment = {"key": message.key, "arms": [
        {"name": a.name, "weight": a.weight,
         "serves": serving_from_proto(a.serves)}
        for a in message.arms]}
    if message.traffic_from or message.traffic_to:
        experiment["traffic"] = [message.traffic_from, message.traffic_to]
    for name in ("salt", "status", "start", "stop"):
        if getattr(message, name):
            experiment[name] = getattr(message, name)
    if message.targeting:
        experiment["targeting"] = {k: list(v.values) for k, v in message.targeting.items()}
    if message.allowlist:
        experiment["allowlist"] = dict(message.allowlist)
    return message.layer, experiment


def editor(tokens: AdminTokens, context) -> str:
    """Who holds the call's `authorization: Bearer <token>`, if an editor (else an
    AdminError with the status to answer)."""
    metadata = dict(context.invocation_metadata() or ())
    header = metadata.get("authorization", "")
    token = header[len("Bearer "):] if header.startswith("Bearer ") else ""
    return tokens.editor(token)


class ExperimentServicer(experiments_pb2_grpc.ExperimentServiceServicer):
    def __init__(self, document: ExperimentDocument, source: ExperimentSource,
                 tokens: AdminTokens):
        self.document, self.source, self.tokens = document, source, tokens

    async def _answer(self, context, work):
        try:
            return work()
        except AdminError as err:
            await context.abort(getattr(grpc.StatusCode, err.code), str(err))

    def _editor(self, context) -> str:
        return editor(self.tokens, context)

    def _changed(self, version: str, layer: str, experiment: dict
                 ) -> experiments_pb2.ChangeResponse:
        self.source.reload_if_changed()  # this replica serves it now; others on their poll
        return experiments_pb2.ChangeResponse(
            config_version=version, experiment=experiment_to_proto(layer, experiment))

    async def ListExperiments(self, request, context):
        version, experiments = self.document.experiments()
        return experiments_pb2.ListExperimentsResponse(
            config_version=version,
            experiments=[experiment_to_proto(layer, e) for layer, e in experiments],
            defaults=serving_to_proto(self.document.read().get("defaults", {})))

    async def GetExperiment(self, request, context):
        return await self._answer(
            context, lambda: experiment_to_proto(*self.document.get(request.key)))

    async def CreateExperiment(self, request, context):
        def work():
            who = self._editor(context)
            layer, experiment = experiment_from_proto(request.experiment)
            return self._changed(*self.document.create(
                who, layer, experiment, request.expected_config_version))
        return await self._answer(context, work)

    async def UpdateExperiment(self, request, context):
        def work():
            who = self._editor(context)
            layer, experiment = experiment_from_proto(request.experiment)
            return self._changed(*self.document.update(
                who, layer, experiment, request.force, request.expected_config_version))
        return await self._answer(context, work)

    async def _set_status(self, request, context, status: str):
        def work():
            who = self._editor(context)
            return self._changed(*self.document.set_status(
                who, request.key, status, request.expected_config_version))
        return await self._answer(context, work)

    async def PauseExperiment(self, request, context):
        return await self._set_status(request, context, "paused")

    async def ResumeExperiment(self, request, context):
        return await self._set_status(request, context, "running")

    async def StopExperiment(self, request, context):
        return await self._set_status(request, context, "stopped")

    async def GetAssignment(self, request, context):
        if not request.user_id.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id is empty")
        config = self.source.current
        serving, assignments = config.resolve(request.user_id, dict(request.attributes))
        response = experiments_pb2.GetAssignmentResponse(
            config_version=config.version,
            # an empty label is no label: left out
            serving=serving_to_proto({f: getattr(serving, f) for f in SERVING_FIELDS
                                      if getattr(serving, f) != ""}))
        for a in assignments:
            response.assignments.add(layer=a.layer, experiment=a.experiment, arm=a.arm)
        return response

    def _serving(self, version: str) -> experiments_pb2.ServingResponse:
        self.source.reload_if_changed()
        doc = self.document.read()
        shadow = doc.get("shadow") or {}
        return experiments_pb2.ServingResponse(
            config_version=version, defaults=serving_to_proto(doc.get("defaults", {})),
            shadow_share=shadow.get("share", 0),
            shadow_serves=serving_to_proto(shadow.get("serves", {})))

    async def SwitchDefaults(self, request, context):
        def work():
            who = self._editor(context)
            version, _ = self.document.switch_defaults(
                who, serving_from_proto(request.defaults), request.expected_config_version)
            return self._serving(version)
        return await self._answer(context, work)

    async def SetShadow(self, request, context):
        def work():
            who = self._editor(context)
            version, _ = self.document.set_shadow(
                who, request.share, serving_from_proto(request.serves),
                request.expected_config_version)
            return self._serving(version)
        return await self._answer(context, work)
