"""Load test of the whole stack on 127.0.0.1: bounded in time, prints figures, writes a report.

  python -m load_tests.run --workdir var [--users 20] [--seconds 30] [--target HOST:PORT]

1. Sequential round trips, Recommend (cycling over the known users) and a bare gRPC echo
   (grpc.aio and thread-pool servers), in the same run: latency and CPU time per call
   summed over every process involved (from /proc).
2. Locust, headless, `--users` concurrent gRPC users for `--seconds`: RPS and percentiles.
Writes reports/loadtest/{summary.json, latency.png, locust.html}.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc

from load_tests import NUM_USERS
from recsys.v1 import recommend_pb2, recommend_pb2_grpc
from tools.stack import ROOT, Stack, free_port, service_env

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def sequential(call, n: int, pids: dict[str, int]) -> dict:
    """Latency of `n` calls one after another, and the CPU they cost: in total and by
    process (`pids`: name -> pid; "client" is this process)."""
    for _ in range(min(200, n)):  # warm-up
        call()
    latencies = []
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    client_before = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - start) * 1000)
    by_process = {name: (cpu_seconds(pid) - before[name]) / n * 1000
                  for name, pid in pids.items()}
    by_process["client"] = (time.process_time() - client_before) / n * 1000
    latencies.sort()
    return {"calls": n, "p50_ms": round(statistics.median(latencies), 3),
            "p99_ms": round(latencies[int(0.99 * n) - 1], 3),
            "cpu_ms_per_call": round(sum(by_process.values()), 3),
            "cpu_ms_per_call_by_process": {k: round(v, 3) for k, v in by_process.items()}}


def _echo_server(port: int, *options: str) -> subprocess.Popen:
    """load_tests/echo.py on `port`, once it says it is ready."""
    server = subprocess.Popen([sys.executable, "-m", "load_tests.echo", str(port), *options],
                              cwd=ROOT, env=service_env(), stdout=subprocess.PIPE, text=True)
    server.stdout.readline()
    return server


def echo_baseline(n: int, sync: bool = False) -> dict:
    port = free_port()
    server = _echo_server(port, *(["--sync"] if sync else []))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary("/echo.Echo/Echo")
            payload = b"x" * 64
            return sequential(lambda: echo(payload, timeout=2), n, {"server": server.pid})
    finally:
        server.terminate()
        server.wait()


# The stack's calls: the router asks the candidate service and, for the two_stage arm's
# tenth of the users, the ranking service; both ask the model server.
TOPOLOGY = {"model_server": [], "candidate": ["model_server"], "ranking": ["model_server"],
            "router": ["candidate", "ranking"]}


def relay_floor(n: int, payload_bytes: int = 600) -> dict:
    """`sequential` through the stack's topology with every service a bare relay
    (load_tests/echo.py --forward): what its gRPC hops cost with no work at all."""
    ports = {name: free_port() for name in TOPOLOGY}
    servers = {}
    try:
        for name, calls in TOPOLOGY.items():  # callees first: a relay dials at start
            servers[name] = _echo_server(ports[name], *(
                ["--forward", *(f"127.0.0.1:{ports[c]}" for c in calls), "--every", "10"]
                if calls else []))
        with grpc.insecure_channel(f"127.0.0.1:{ports['router']}") as channel:
            relay = channel.unary_unary("/echo.Echo/Echo")
            payload = b"x" * payload_bytes
            return sequential(lambda: relay(payload, timeout=2), n,
                              {name: server.pid for name, server in servers.items()})
    finally:
        for server in servers.values():
            server.terminate()
            server.wait()


def run_locust(target: str, users: int, seconds: int, out: Path,
               pids: dict[str, int] | None = None) -> dict:
    """Locust headless against `target`; its own output goes to out/locust.log. With
    `pids` (name -> pid), also the CPU each of those processes and Locust itself spent
    per request meanwhile: under load, calls share wake-ups, so this is the figure that
    bounds the RPS two cores can answer (the sequential one is higher)."""
    prefix = out / "locust"
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "load_tests/locustfile.py"),
               "--headless", "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
               "--host", target, "--csv", str(prefix), "--html", str(out / "locust.html"),
               "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING"]
    before = {name: cpu_seconds(pid) for name, pid in (pids or {}).items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out / "locust.log", "a") as log:
        subprocess.run(command, cwd=ROOT, env=service_env(), check=False,
                       timeout=seconds + 120, stdout=log, stderr=subprocess.STDOUT)
    spent = {name: cpu_seconds(pid) - before[name] for name, pid in (pids or {}).items()}
    finished = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent["locust"] = (finished.ru_utime + finished.ru_stime
                       - children.ru_utime - children.ru_stime)
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    total = rows["Aggregated"]
    fallbacks = rows.get("Recommend (fallback)", {}).get("Request Count", "0")
    requests = int(total["Request Count"])
    point = {"users": users, "seconds": seconds,
             "requests": requests, "failures": int(total["Failure Count"]),
             "fallback_answers": int(fallbacks),
             "rps": round(float(total["Requests/s"]), 1),
             **{f"p{p}_ms": float(total[f"{p}%"]) for p in (50, 90, 95, 99)}}
    if requests:
        by_process = {name: round(cpu / requests * 1000, 3) for name, cpu in spent.items()}
        point["cpu_ms_per_request_by_process"] = by_process
        if pids:
            point["stack_cpu_ms_per_request"] = round(sum(
                v for name, v in by_process.items() if name != "locust"), 3)
    return point


def plot(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    locust = summary["locust"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    percentiles = ["p50", "p90", "p95", "p99"]
    left.bar(percentiles, [locust[f"{p}_ms"] for p in percentiles], color="#4c72b0")
    left.set_title(f"Recommend under load: {locust['users']} users, {locust['rps']} RPS")
    left.set_ylabel("latency (ms)")
    kinds = ["echo", "recommend"]
    right.bar([f"{k}\nlatency" for k in kinds],
              [summary["sequential"][k]["p50_ms"] for k in kinds], color="#55a868")
    right.bar([f"{k}\nCPU" for k in kinds],
              [summary["sequential"][k]["cpu_ms_per_call"] for k in kinds], color="#c44e52")
    right.set_title("one call, sequential (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _row(figures: dict) -> str:
    return (f"{figures['p50_ms']:8.2f} {figures['p99_ms']:8.2f} "
            f"{figures['cpu_ms_per_call']:10.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Load test the serving stack on 127.0.0.1.")
    parser.add_argument("--workdir", default="var")
    parser.add_argument("--target", help="router address of an already running stack "
                                         "(default: start one on free ports)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=2000,
                        help="sequential calls for the per-call latency and CPU figures")
    parser.add_argument("--out", default=str(ROOT / "reports" / "loadtest"))
    args = parser.parse_args(argv)
    if args.target and not args.target.startswith(("127.", "localhost:", "[::1]:")):
        parser.error("--target must be a loopback address (127.x.x.x)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    stack = None if args.target else Stack.on_free_ports(args.workdir)
    try:
        if stack:
            print("starting the stack on free ports...", flush=True)
            stack.start(progress=print)
        target = args.target or stack.address("services/router")
        pids = ({name.rsplit("/", 1)[-1]: p.popen.pid for name, p in stack.processes.items()}
                if stack else {})
        with grpc.insecure_channel(target) as channel:
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            requests = itertools.cycle(
                recommend_pb2.RecommendRequest(user_id=str(user), num_results=10)
                for user in range(1, NUM_USERS + 1))
            print(f"sequential: {args.calls} Recommend calls, then {args.calls} echo calls",
                  flush=True)
            recommend = sequential(lambda: stub.Recommend(next(requests), timeout=2), args.calls,
                                   pids)
        echo = echo_baseline(args.calls)
        echo_sync = echo_baseline(args.calls, sync=True)
        print(f"locust: {args.users} users for {args.seconds}s against {target}", flush=True)
        locust = run_locust(target, args.users, args.seconds, out, pids)
    finally:
        if stack:
            stack.stop()

    summary = {"sequential": {"recommend": recommend, "echo": echo, "echo_sync": echo_sync,
                              "latency_ratio": round(recommend["p50_ms"] / echo["p50_ms"], 1),
                              "cpu_ratio": round(recommend["cpu_ms_per_call"]
                                                 / echo["cpu_ms_per_call"], 1)},
               "locust": locust, "cpu_counted": "all stack processes + this client"
               if stack else "this client only (external target)"}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, out / "latency.png")
    s, lc = summary["sequential"], locust
    print(f"""
                         p50 ms   p99 ms   CPU ms/call
  bare gRPC echo       {_row(echo)}   (grpc.aio server)
  same, sync server    {_row(echo_sync)}
  Recommend            {_row(recommend)}
  ratio                {s['latency_ratio']:8.1f}          {s['cpu_ratio']:10.1f}
  Recommend CPU by process (ms/call): {', '.join(
        f'{k} {v:.2f}' for k, v in recommend['cpu_ms_per_call_by_process'].items())}

  locust: {lc['users']} users, {lc['seconds']} s: {lc['rps']} RPS, p50 {lc['p50_ms']:.0f} ms,
          p95 {lc['p95_ms']:.0f} ms, p99 {lc['p99_ms']:.0f} ms, {lc['failures']} failures
          in {lc['requests']} requests ({lc['fallback_answers']} fallback answers)
          CPU per request meanwhile: {', '.join(
        f'{k} {v:.2f}' for k, v in lc.get('cpu_ms_per_request_by_process', {}).items())}
  report: {out / 'summary.json'}, {out / 'latency.png'}, {out / 'locust.html'}""")
    return 1 if locust["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
