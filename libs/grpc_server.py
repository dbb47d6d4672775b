"""gRPC server bootstrap every service uses.

One server (asyncio, or threaded for a service whose calls are work) with: health
checking (grpc.health.v1), server reflection, an interceptor that times every call into
Prometheus and binds the request id to the logs, a /metrics HTTP endpoint, and graceful
shutdown on SIGTERM / SIGINT (health turns NOT_SERVING, in-flight calls get
`grace_seconds` to finish).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
import uuid
from concurrent import futures
from typing import Awaitable, Callable, Iterable

import grpc
from grpc_health.v1 import health as health_module
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from libs import log, metrics

logger = logging.getLogger(__name__)

# Message size headroom: a top-k response over a large catalog is a few MB.
SERVER_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024),
                  ("grpc.max_send_message_length", 64 * 1024 * 1024)]
# gRPC turns SO_REUSEPORT on by default: a second instance on a taken port would then
# silently share its traffic instead of failing.
# Connections are closed (gracefully) after MAX_CONNECTION_AGE_MS, so clients reconnect and
# re-resolve their target: replicas an autoscaler added behind a headless Service get
# traffic within that time.
MAX_CONNECTION_AGE_MS = 30_000
_SERVER_ONLY_OPTIONS = [("grpc.so_reuseport", 0),
                        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
                        ("grpc.max_connection_age_grace_ms", 10_000)]
# Every client spreads its calls over all the addresses its target resolves to (a
# headless Service's pods in Kubernetes, `ipv4:a:p,b:q` locally) instead of pinning one
# connection, and retries a call that failed UNAVAILABLE (a replica gone) on another,
# within the call's deadline.
SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{"name": [{}], "retryPolicy": {
        "maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})
# Reconnect within a second once a restarted dependency is back (gRPC's default backoff
# grows to two minutes, which would keep a healthy stage in fallback that long).
CHANNEL_OPTIONS = SERVER_OPTIONS + [("grpc.initial_reconnect_backoff_ms", 100),
                                    ("grpc.min_reconnect_backoff_ms", 100),
                                    ("grpc.max_reconnect_backoff_ms", 1000),
                                    ("grpc.enable_retries", 1),
                                    ("grpc.service_config", SERVICE_CONFIG)]


def _request_id(request, context) -> str:
    rid = getattr(request, "request_id", "")
    if not rid:
        rid = dict(context.invocation_metadata() or ()).get("x-request-id", "")
    return rid or uuid.uuid4().hex


@contextlib.contextmanager
def _observing(service: str, method: str, request, context):
    """Binds the request id to the logs, then puts the call's code and time into
    Prometheus and logs a line for each failed call."""
    token = log.request_id.set(_request_id(request, context))
    start, crashed = time.perf_counter(), False
    try:
        yield
    except Exception:
        crashed = True
        raise
    finally:
        # an abort sets its code before raising; anything else reaches the client as
        # UNKNOWN and must count as a failure, not as OK
        code = context.code() or (grpc.StatusCode.UNKNOWN if crashed
                                  else grpc.StatusCode.OK)
        code = code.name if isinstance(code, grpc.StatusCode) else str(code)
        seconds = time.perf_counter() - start
        metrics.RPC_LATENCY.labels(service, method, code).observe(seconds)
        # one line per failed call; successful ones only at DEBUG (a JSON line per hop
        # costs about 0.1 ms of CPU)
        log.event(logger, "rpc", logging.DEBUG if code == "OK" else logging.INFO,
                  method=method, code=code, ms=round(seconds * 1000, 2))
        log.request_id.reset(token)


def _observed_handler(handler, observed) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        observed, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


class _ObservingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, service: str):
        self.service = service
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}  # per method, built once

    async def intercept_service(self, continuation, details):
        wrapped = self._wrapped.get(details.method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        if handler is None or not handler.unary_unary:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        behavior, service = handler.unary_unary, self.service

        async def observed(request, context):
            with _observing(service, method, request, context):
                return await behavior(request, context)

        wrapped = self._wrapped[details.method] = _observed_handler(handler, observed)
        return wrapped


class _ThreadedObservingInterceptor(grpc.ServerInterceptor):
    """The same for a threaded server (its handlers are plain functions)."""

    def __init__(self, service: str):
        self.service = service
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        self._lock = threading.Lock()

    def intercept_service(self, continuation, details):
        wrapped = self._wrapped.get(details.method)
        if wrapped is not None:
            return wrapped
        handler = continuation(details)
        if handler is None or not handler.unary_unary:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        behavior, service = handler.unary_unary, self.service

        def observed(request, context):
            with _observing(service, method, request, context):
                return behavior(request, context)

        with self._lock:
            wrapped = self._wrapped[details.method] = _observed_handler(handler, observed)
        return wrapped


class Server:
    """A started server; `wait()` runs until a signal or `stop()`."""

    def __init__(self, name: str, server, health, port: int, metrics_port: int,
                 service_names: list[str], grace: float):
        self.name, self.port, self.metrics_port = name, port, metrics_port
        self._server, self._health, self._names, self._grace = server, health, service_names, grace
        self._threaded = isinstance(server, grpc.Server)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def set_serving(self, serving: bool) -> None:
        """Readiness as health checking reports it (e.g. models loaded or not)."""
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ["", *self._names]:
            if self._threaded:
                self._health.set(name, status)
            else:
                await self._health.set(name, status)

    async def wait(self, on_stop: Callable[[], Awaitable[None]] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        await self._stopping.wait()
        log.event(logger, "shutting down", grace_seconds=self._grace)
        await self.set_serving(False)
        if self._threaded:
            await asyncio.to_thread(self._server.stop(self._grace).wait)
        else:
            await self._server.stop(self._grace)
        if on_stop:
            await on_stop()
        log.event(logger, "stopped")


async def start(name: str, register: Callable[[grpc.aio.Server], Iterable[str]],
                host: str, port: int, metrics_port: int | None,
                grace_seconds: float = 5.0, threads: int = 0) -> Server:
    """Builds and starts the server; `register` adds servicers and returns their names.
    With `threads`, a threaded server whose handlers are plain functions, run in that
    many threads (for a service whose calls are work, not waiting: the model server, as
    TF Serving's own server is); else an asyncio server."""
    if threads:
        server = grpc.server(futures.ThreadPoolExecutor(threads, thread_name_prefix=name),
                             interceptors=[_ThreadedObservingInterceptor(name)],
                             options=SERVER_OPTIONS + _SERVER_ONLY_OPTIONS)
        health = health_module.HealthServicer()
    else:
        server = grpc.aio.server(interceptors=[_ObservingInterceptor(name)],
                                 options=SERVER_OPTIONS + _SERVER_ONLY_OPTIONS)
        health = HealthServicer()
    names = list(register(server))
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        names + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME], server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise OSError(f"cannot listen on {host}:{port} (in use, or not an address here)")
    if threads:
        server.start()
    else:
        await server.start()
    started = Server(name, server, health, bound, 0, names, grace_seconds)
    await started.set_serving(True)
    started.metrics_port = (metrics.serve_metrics(metrics_port, host)
                            if metrics_port is not None else 0)
    log.event(logger, "serving", address=f"{host}:{bound}", metrics_port=started.metrics_port,
              services=names)
    return started


def channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
