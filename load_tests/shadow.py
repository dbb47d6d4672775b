"""What shadow traffic costs the client: Recommend latency with the shadow off and on.

  python -m load_tests.shadow --workdir var [--calls 300] [--rounds 4]

Starts the stack on free ports (its router reads a copy of the experiment document and an
editor token made for this run), then alternates rounds of back-to-back sequential calls
with the shadow off and at 100% (the shadow re-answers every request with the retrieval
order only, `rank: false`, so it does different work), switching it through the admin
API. Back-to-back calls are the worst case: each shadow competes with the next live call
for the two cores. Prints p50 / p99 per setting and their ratio; writes
reports/loadtest/shadow.json.
"""
from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from pathlib import Path

import grpc

from recsys.v1 import experiments_pb2, experiments_pb2_grpc, recommend_pb2, recommend_pb2_grpc
from services.router.experiment_admin import AdminTokens, Token
from tools.stack import ROOT, Stack


def percentiles(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    return {"calls": len(ordered), "p50_ms": round(statistics.median(ordered), 3),
            "p99_ms": round(ordered[int(0.99 * len(ordered)) - 1], 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="var")
    parser.add_argument("--calls", type=int, default=300, help="calls per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per setting")
    parser.add_argument("--out", default=str(ROOT / "reports" / "loadtest"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    token = secrets.token_hex(16)
    tokens_file = out / "shadow_tokens.yaml"
    tokens_file.write_text(json.dumps({"tokens": [
        vars(Token("load-test", AdminTokens.digest(token)))]}))
    stack = Stack.on_free_ports(args.workdir, extra={"services/router": [
        f"admin_tokens_file={tokens_file}", f"shadow_log_dir={out / 'shadow_log'}"]})
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    try:
        print("starting the stack on free ports...", flush=True)
        stack.start(progress=print)
        with grpc.insecure_channel(stack.address("services/router")) as channel:
            recommend = recommend_pb2_grpc.RecommendServiceStub(channel)
            admin = experiments_pb2_grpc.ExperimentServiceStub(channel)
            auth = (("authorization", f"Bearer {token}"),)
            users = [str(u) for u in range(1, 201)]
            for user in users[:50]:  # warm-up
                recommend.Recommend(recommend_pb2.RecommendRequest(user_id=user,
                                                                   num_results=10))
            for round_ in range(args.rounds * 2):
                setting = "on" if round_ % 2 else "off"
                admin.SetShadow(experiments_pb2.SetShadowRequest(
                    share=100.0 if setting == "on" else 0.0,
                    serves=experiments_pb2.Serving(rank=False)), metadata=auth, timeout=10)
                for i in range(args.calls):
                    request = recommend_pb2.RecommendRequest(user_id=users[i % len(users)],
                                                             num_results=10)
                    start = time.perf_counter()
                    recommend.Recommend(request, timeout=5)
                    latencies[setting].append((time.perf_counter() - start) * 1000)
                print(f"  round {round_ + 1}: shadow {setting}", flush=True)
    finally:
        stack.stop()
        tokens_file.unlink(missing_ok=True)

    summary = {setting: percentiles(values) for setting, values in latencies.items()}
    summary["ratio_p50"] = round(summary["on"]["p50_ms"] / summary["off"]["p50_ms"], 2)
    summary["ratio_p99"] = round(summary["on"]["p99_ms"] / summary["off"]["p99_ms"], 2)
    (out / "shadow.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"""
                     p50 ms   p99 ms
  shadow off       {summary['off']['p50_ms']:8.2f} {summary['off']['p99_ms']:8.2f}
  shadow at 100%   {summary['on']['p50_ms']:8.2f} {summary['on']['p99_ms']:8.2f}
  ratio            {summary['ratio_p50']:8.2f} {summary['ratio_p99']:8.2f}
  report: {out / 'shadow.json'}""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
