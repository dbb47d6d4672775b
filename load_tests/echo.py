"""A bare gRPC unary echo server: the floor one gRPC hop costs on this machine.

  python -m load_tests.echo PORT [--sync] [--forward TARGET ... [--every N]]

`--sync` serves with grpc's thread-pool server instead of grpc.aio, so the load test can
show which of the two costs less here. `--forward` makes it a bare relay, as the services
are with their work taken out: each call is passed on to the first target (and answered
with its answer), and every Nth call to the other targets too.
"""
import argparse
import asyncio
from concurrent import futures

import grpc


def _handlers(echo):
    return grpc.method_handlers_generic_handler(
        "echo.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})


async def serve_aio(port: int, forward: list[str], every: int) -> None:
    calls = [grpc.aio.insecure_channel(target).unary_unary("/echo.Echo/Echo")
             for target in forward]
    count = 0

    async def echo(request: bytes, context) -> bytes:
        nonlocal count
        count += 1
        answer = await calls[0](request, timeout=5) if calls else request
        if count % every == 0:
            for call in calls[1:]:
                await call(request, timeout=5)
        return answer

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([_handlers(echo)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def serve_sync(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers([_handlers(lambda request, context: request)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--sync", action="store_true")
    parser.add_argument("--forward", nargs="+", default=[], metavar="TARGET")
    parser.add_argument("--every", type=int, default=1)
    args = parser.parse_args()
    if args.sync:
        serve_sync(args.port)
    else:
        asyncio.run(serve_aio(args.port, args.forward, args.every))
