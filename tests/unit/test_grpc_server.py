"""The shared server bootstrap, asyncio and threaded: graceful shutdown, health, metrics,
request ids."""
from __future__ import annotations

import asyncio
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs import grpc_server, log

SERVICE = "test.Slow"
seen_request_ids: list[str] = []


async def slow_echo(request: bytes, context) -> bytes:
    seen_request_ids.append(log.request_id.get())
    await asyncio.sleep(0.5)
    return request


async def crash(request: bytes, context) -> bytes:
    raise RuntimeError("a bug")


async def reject(request: bytes, context) -> bytes:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request")


def register(server):
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Call": grpc.unary_unary_rpc_method_handler(slow_echo),
        "Crash": grpc.unary_unary_rpc_method_handler(crash),
        "Reject": grpc.unary_unary_rpc_method_handler(reject)})])
    return [SERVICE]


def threaded_echo(request: bytes, context) -> bytes:
    seen_request_ids.append(log.request_id.get())
    time.sleep(0.5)
    return request


def threaded_crash(request: bytes, context) -> bytes:
    raise RuntimeError("a bug")


def threaded_reject(request: bytes, context) -> bytes:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request")


def register_threaded(server):
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Call": grpc.unary_unary_rpc_method_handler(threaded_echo),
        "Crash": grpc.unary_unary_rpc_method_handler(threaded_crash),
        "Reject": grpc.unary_unary_rpc_method_handler(threaded_reject)})])
    return [SERVICE]


# the asyncio server, and the threaded one (plain-function handlers, as the model server's)
SERVERS = pytest.mark.parametrize("name, registered, threads", [
    ("test", register, 0), ("test_threaded", register_threaded, 2)])


@SERVERS
def test_stop_lets_calls_in_flight_finish_and_refuses_new_ones(name, registered, threads):
    asyncio.run(_stop_lets_calls_in_flight_finish(name, registered, threads))


async def _stop_lets_calls_in_flight_finish(name, registered, threads):
    server = await grpc_server.start(name, registered, "127.0.0.1", 0, 0, grace_seconds=5,
                                     threads=threads)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary(f"/{SERVICE}/Call")
        in_flight = asyncio.ensure_future(call(b"hello", metadata=(("x-request-id", "r-1"),),
                                               timeout=5))
        await asyncio.sleep(0.1)
        waiting = asyncio.ensure_future(server.wait())
        server.stop()
        assert await in_flight == b"hello"
        await waiting
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(b"late", timeout=1)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert seen_request_ids[-1] == "r-1"


@SERVERS
def test_health_reports_serving_and_metrics_count_calls(name, registered, threads):
    asyncio.run(_health_and_metrics(name, registered, threads))


async def _health_and_metrics(name, registered, threads):
    server = await grpc_server.start(name, registered, "127.0.0.1", 0, 0, threads=threads)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            await channel.unary_unary(f"/{SERVICE}/Call")(b"x", timeout=5)
            for method, code in (("Crash", grpc.StatusCode.UNKNOWN),
                                 ("Reject", grpc.StatusCode.INVALID_ARGUMENT)):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await channel.unary_unary(f"/{SERVICE}/{method}")(b"x", timeout=5)
                assert err.value.code() == code
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode())
        # what the client saw, including a handler that crashed (the error alerts read it)
        for method, code in (("Call", "OK"), ("Crash", "UNKNOWN"),
                             ("Reject", "INVALID_ARGUMENT")):
            assert (f'recsys_rpc_server_seconds_count{{code="{code}",method="{method}",'
                    f'service="{name}"}}') in text, method
    finally:
        server.stop()
        await server.wait()


def test_port_in_use_is_a_clear_error():
    asyncio.run(_port_in_use())


async def _port_in_use():
    first = await grpc_server.start("test", register, "127.0.0.1", 0, None)
    try:
        with pytest.raises(OSError, match="cannot listen on 127.0.0.1"):
            await grpc_server.start("test", register, "127.0.0.1", first.port, None)
    finally:
        first.stop()
        await first.wait()
