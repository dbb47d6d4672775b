"""A bare gRPC unary echo server: the floor one gRPC hop costs on this machine.

  python -m load_tests.echo PORT
"""
import asyncio
import sys

import grpc

METHOD = "/echo.Echo/Echo"


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "echo.Echo", {"Echo": handler})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def _echo(request: bytes, context) -> bytes:
    return request


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
