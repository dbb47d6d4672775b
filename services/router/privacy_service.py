"""PrivacyService over gRPC: a user's data exported or erased (docs/privacy.md). Tokens
and status codes as the experiments' admin API; the work is pipelines/privacy's, run in a
thread so live Recommend calls go on meanwhile."""
from __future__ import annotations

import asyncio
import json

import grpc

from pipelines.privacy import user_data
from recsys.v1 import privacy_pb2, privacy_pb2_grpc
from services.router.admin_service import editor
from services.router.config import RouterConfig
from services.router.experiment_admin import AdminError, AdminTokens


def privacy_config(config: RouterConfig) -> user_data.PrivacyConfig | None:
    """What the router's config reaches: its logs, experiment document, feature store and
    stream, and the stores under `privacy_workdir`; None without one."""
    if not config.privacy_workdir:
        return None
    return user_data.PrivacyConfig(
        workdir=config.privacy_workdir, feature_store_config=config.feature_store_config,
        feature_store_dir=config.feature_store_dir,
        stream_redis=config.outcome_stream_redis, stream_redis_ssl=config.outcome_stream_ssl,
        stream=config.outcome_stream, exposure_log_dir=config.exposure_log_dir,
        shadow_log_dir=config.shadow_log_dir, outcome_log_dir=config.outcome_log_dir,
        experiments_file=config.experiments_file,
        experiment_audit_log=config.experiment_audit_log)


class PrivacyServicer(privacy_pb2_grpc.PrivacyServiceServicer):
    def __init__(self, config: user_data.PrivacyConfig | None, tokens: AdminTokens):
        self.config, self.tokens = config, tokens
        # one erasure or export at a time: they rewrite the same files
        self._lock = asyncio.Lock()

    def _check(self, context, user_id: str) -> str:
        who = editor(self.tokens, context)
        if self.config is None:
            raise AdminError("FAILED_PRECONDITION", "this router has no privacy_workdir: "
                             "it cannot reach the stores a user's data is in")
        try:
            user_data.check_user(user_id)
        except ValueError as err:
            raise AdminError("INVALID_ARGUMENT", f"field 'user_id': {err}") from None
        return who

    async def ExportUser(self, request, context):
        try:
            self._check(context, request.user_id)
        except AdminError as err:
            await context.abort(getattr(grpc.StatusCode, err.code), str(err))
        async with self._lock:
            exported = await asyncio.to_thread(user_data.export, self.config,
                                               request.user_id)
        return privacy_pb2.ExportUserResponse(json=json.dumps(exported, default=str))

    async def EraseUser(self, request, context):
        try:
            who = self._check(context, request.user_id)
            if not request.ticket.strip():
                raise AdminError("INVALID_ARGUMENT", "field 'ticket' is empty: name the "
                                 "request (a ticket or case number)")
        except AdminError as err:
            await context.abort(getattr(grpc.StatusCode, err.code), str(err))
        async with self._lock:
            record = await asyncio.to_thread(
                user_data.erase, self.config, request.user_id, request.ticket, who,
                lambda _message: None)
        return privacy_pb2.EraseUserResponse(erased=record["erased"], left=record["left"],
                                             record_json=json.dumps(record))

