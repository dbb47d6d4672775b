"""A bare gRPC unary echo server: the floor one gRPC hop costs on this machine.

  python -m load_tests.echo PORT [--sync]

`--sync` serves with grpc's thread-pool server instead of grpc.aio, so the load test can
show which of the two costs less here.
"""
import argparse
import asyncio
from concurrent import futures

import grpc


def _handlers(echo):
    return grpc.method_handlers_generic_handler(
        "echo.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})


async def serve_aio(port: int) -> None:
    async def echo(request: bytes, context) -> bytes:
        return request

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
    args = parser.parse_args()
    if args.sync:
        serve_sync(args.port)
    else:
        asyncio.run(serve_aio(args.port))
