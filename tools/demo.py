"""Starts the serving stack, asks Recommend for a few users, prints the answers, stops.

  python -m tools.demo --workdir var [--users 1,2,3] [--num 5]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import grpc

from recsys.v1 import common_pb2, recommend_pb2, recommend_pb2_grpc
from tools.stack import Stack, configured_ports, warn_unpushed

UNKNOWN_USER = "new-user-without-history"


def _ports_in_use() -> bool:
    import socket
    for port, _ in configured_ports().values():
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
    return False


def print_answer(user_id: str, response, titles: dict[str, str]) -> None:
    flag = (f"  FALLBACK: {common_pb2.FallbackReason.Name(response.fallback_reason)}"
            if response.fallback else "")
    arms = ", ".join(f"{a.experiment}={a.arm}" for a in response.assignments) or "defaults"
    print(f"\nuser {user_id}  {arms}  models: retrieval "
          f"v{response.model_versions.retrieval}, ranking v{response.model_versions.ranking}"
          f"{flag}")
    for rank, item in enumerate(response.items, 1):
        print(f"  {rank:2d}. {titles.get(item.item_id, item.item_id)[:55]:55s} "
              f"score {item.score:5.2f}  (retrieval {item.retrieval_score:5.2f})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="var")
    parser.add_argument("--users", default="1,42,314",
                        help="comma-separated user ids (an unknown user is always added)")
    parser.add_argument("--num", type=int, default=5)
    args = parser.parse_args(argv)
    catalog = Path(args.workdir, "data", "raw", "items.csv")
    if not catalog.exists():
        print(f"error: {catalog} not found; run `make train` first", file=sys.stderr)
        return 2
    with open(catalog, newline="", encoding="utf-8") as f:
        titles = {row["item_id"]: row["title"] for row in csv.DictReader(f)}

    warn_unpushed(args.workdir)

    # Default ports when free (so `make serve` users see the same addresses), else any.
    stack = (Stack.on_free_ports(args.workdir) if _ports_in_use() else Stack(args.workdir))
    print("starting the model server and the three services:")
    try:
        stack.start(progress=print)
    except TimeoutError as err:  # a process that never became healthy: say which, stop all
        stack.stop()
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        router = stack.address("services/router")
        print(f"RecommendService at {router}")
        with grpc.insecure_channel(router) as channel:
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            for user_id in [*args.users.split(","), UNKNOWN_USER]:
                response = stub.Recommend(recommend_pb2.RecommendRequest(
                    user_id=user_id.strip(), num_results=args.num), timeout=5)
                print_answer(user_id, response, titles)
    finally:
        stack.stop()
    print("\nstack stopped. `make serve` keeps it running; Ctrl-C stops it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
