"""Scale benchmark: retrieval search vs catalog size, and the whole stack under rising load.

  python -m load_tests.scale --workdir var [--sizes 10000 100000 1000000]
                             [--users 1 2 4 8 16] [--seconds 15] [--calls 1000]

1. Search (in process, one query at a time, one thread, as the candidate service runs
   it): for each catalog size, exact search (numpy) and the IVF index
   (libs/candidate_index.py) at several probe counts: p50 / p99 latency and recall@100
   against exact, with each query's exclusions (700 items, some of its true best) filtered
   inside the search; build and load time, file size. Catalogs beyond the trained one are
   drawn around the newest retrieval version's item embeddings (each a trained item's
   embedding plus Gaussian noise of one per-dimension standard deviation); the queries
   are that version's query embeddings of real users.
2. The stack (needs `make train` in --workdir): GetCandidates p50 / p99 with the trained
   catalog and with the largest size's catalog behind the same version (its index
   replaced in a copy of the model repository), both running and called in turn; CPU per
   Recommend by process next to a bare gRPC echo and to the same topology of bare
   relays; Locust at each `--users` count: RPS against p50 / p99 and CPU per request;
   then, in a Locust run of its own, each service's flame graph and top functions
   (py-spy).
Prints progress and figures; writes reports/scale/{summary.json, report.html, *.png}.
"""
from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from libs import candidate_index
from libs.candidate_index import CandidateIndex
from load_tests import NUM_USERS, flamegraph
from tools.stack import ROOT

EXCLUDED = 700  # a heavy user's history: the largest exclusion set MovieLens has


def percentiles(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[max(0, int(0.99 * len(ordered)) - 1)] * 1000, 3)}


def newest_retrieval(workdir: Path) -> Path:
    versions = [p for p in (workdir / "model_repo" / "retrieval").glob("*")
                if (p / "assets.extra" / candidate_index.DIRECTORY).is_dir()]
    if not versions:
        raise SystemExit(f"error: no retrieval version with a candidate index under "
                         f"{workdir}/model_repo; run `make train` first")
    return max(versions, key=lambda p: int(p.name))


def query_embeddings(version: Path, workdir: Path, users: int) -> np.ndarray:
    """The version's query embeddings of the first `users` users (raw landed tables), as
    of the data's newest event: the tower reads the request time, so "now" would make
    each day's queries, and their recall, differ."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from libs.feature_store import CatalogFeatures
    from libs.serving_client import to_ndarray
    from services.candidate.candidates import query_inputs

    embed = tf.saved_model.load(str(version)).signatures["query_embedding"]
    features = CatalogFeatures(workdir / "data" / "raw")
    out = []
    for user in list(features.users)[:users]:
        found = asyncio.run(features.query_features(user))
        inputs = query_inputs(found.user, found.rated_items, features.trends_as_of)
        out.append(embed(**{k: tf.constant(to_ndarray(v)) for k, v in inputs.items()})
                   ["embedding"].numpy()[0])
    return np.asarray(out, np.float32)


def catalog(trained: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    if size == len(trained):
        return trained
    rng = np.random.default_rng(seed)
    drawn = trained[rng.integers(len(trained), size=size)]
    return (drawn + trained.std(axis=0) * rng.normal(size=drawn.shape)).astype(np.float32)


def search_at(size: int, embeddings: np.ndarray, queries: np.ndarray,
              probe_counts: list[int], out: Path) -> dict:
    ids = [f"s{i}" for i in range(size)]
    directory = out / f"index-{size}"
    import faiss

    start = time.perf_counter()
    candidate_index.write(directory, ids, embeddings, threads=os.cpu_count())
    built = time.perf_counter() - start
    faiss.omp_set_num_threads(1)  # one query at a time, as in the service
    start = time.perf_counter()
    approximate = CandidateIndex.load(directory, approximate=True)
    loaded = time.perf_counter() - start
    exact = CandidateIndex.load(directory, approximate=False)
    rng = np.random.default_rng(1)
    cases = []
    for query in queries:  # exclusions: 50 of the query's true best and random others
        best = exact.search(query, 200)
        chosen = {ids[i] for i in rng.choice(size, EXCLUDED - 50, replace=False)}
        cases.append((query, chosen | {item for item, _ in best[::4]}))
    truth, timings = [], []  # each query's exact top 100, in order
    for query, exclude in cases:
        started = time.perf_counter()
        truth.append([item for item, _ in exact.search(query, 100, exclude)])
        timings.append(time.perf_counter() - started)
    result = {"items": size, "build_s": round(built, 1), "load_s": round(loaded, 2),
              "file_mb": round(sum(f.stat().st_size for f in directory.iterdir()) / 1e6, 1),
              "exact": percentiles(timings), "ivf": {}}
    for probes in probe_counts:
        approximate.probes = probes
        timings, recalls, recalls_10 = [], [], []
        for (query, exclude), expected in zip(cases, truth):
            started = time.perf_counter()
            found = {item for item, _ in approximate.search(query, 100, exclude)}
            timings.append(time.perf_counter() - started)
            assert not exclude & found
            recalls.append(len(found.intersection(expected)) / 100)
            # what a top-10 list keeps of the exact one: the share of served hits at stake
            recalls_10.append(len(found.intersection(expected[:10])) / 10)
        result["ivf"][probes] = {**percentiles(timings),
                                 "recall_at_100": round(float(np.mean(recalls)), 4),
                                 "exact_top_10_found": round(float(np.mean(recalls_10)), 4)}
    shutil.rmtree(directory)
    return result


def search_benchmark(args, version: Path, queries: np.ndarray, out: Path) -> list[dict]:
    import threadpoolctl
    threadpoolctl.threadpool_limits(1, user_api="blas")  # one BLAS thread, as the service
    trained = np.load(version / "assets.extra" / candidate_index.DIRECTORY
                      / candidate_index.EMBEDDINGS)
    results = []
    for size in [len(trained), *args.sizes]:
        print(f"search: {size:,} items (build, then {len(queries)} queries per setting)...",
              flush=True)
        results.append(search_at(size, catalog(trained, size), queries, args.probes, out))
        row = results[-1]
        print(f"  exact p50/p99 {row['exact']['p50_ms']}/{row['exact']['p99_ms']} ms; " +
              "; ".join(f"ivf {b} probes: {r['p50_ms']}/{r['p99_ms']} ms recall@100 "
                        f"{r['recall_at_100']}, exact top 10 found "
                        f"{r['exact_top_10_found']}" for b, r in row["ivf"].items()) +
              f"; build {row['build_s']} s, load {row['load_s']} s", flush=True)
    return results


def large_catalog_repo(workdir: Path, version: Path, size: int, tmp: Path) -> Path:
    """A copy of the workdir's model repository whose newest retrieval version searches
    `size` items: the trained catalog plus items drawn around it."""
    repo = tmp / "model_repo"
    shutil.copytree(workdir / "model_repo", repo, symlinks=True)
    trained = np.load(version / "assets.extra" / candidate_index.DIRECTORY
                      / candidate_index.EMBEDDINGS)
    ids = np.load(version / "assets.extra" / candidate_index.DIRECTORY / candidate_index.IDS)
    extra = catalog(trained, size - len(trained), seed=3)
    target = repo / "retrieval" / version.name / "assets.extra" / candidate_index.DIRECTORY
    shutil.rmtree(target)
    candidate_index.write(target, [*ids.tolist(), *(f"s{i}" for i in range(len(extra)))],
                          np.vstack([trained, extra]), threads=os.cpu_count())
    return repo


def get_candidates(workdir: Path, calls: int, repos: dict[str, Path | None]) -> dict:
    """GetCandidates p50 / p99 against each model repository (None: the workdir's), one
    model server and candidate service per repository, all running; the calls go to them
    in turn, so every catalog sees the same machine (a shared one drifts between runs)."""
    import grpc

    from recsys.v1 import candidate_pb2, candidate_pb2_grpc
    from tools import build_manifest
    from tools.stack import Stack

    targets = build_manifest.load()
    stacks = {}
    try:
        for name, repo in repos.items():
            extra = {"services/candidate": [f"model_base_path={repo / 'retrieval'}"],
                     "services/model_server": [f"model_repo={repo}"]} if repo else {}
            stacks[name] = Stack.on_free_ports(workdir, extra=extra)
            stacks[name].start_service(targets["services/model_server"])
            stacks[name].start_service(targets["services/candidate"], timeout=300)
        channels = {name: grpc.insecure_channel(stack.address("services/candidate"))
                    for name, stack in stacks.items()}
        stubs = {name: candidate_pb2_grpc.CandidateServiceStub(channel)
                 for name, channel in channels.items()}
        timings: dict[str, list[float]] = {name: [] for name in stubs}
        for i in range(calls + 100):
            request = candidate_pb2.CandidateRequest(user_id=str(i % NUM_USERS + 1),
                                                     num_candidates=100)
            for name in (list(stubs) if i % 2 else list(stubs)[::-1]):
                started = time.perf_counter()
                stubs[name].GetCandidates(request, timeout=5)
                if i >= 100:
                    timings[name].append(time.perf_counter() - started)
        for channel in channels.values():
            channel.close()
    finally:
        for stack in stacks.values():
            stack.stop()
    return {name: percentiles(found) for name, found in timings.items()}


def profiled(pids: dict[str, int], seconds: int, out: Path):
    """Starts py-spy on every service for `seconds`; the returned function waits for them,
    draws each service's flame graph (profile-<service>.svg) and gives its top functions."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    running = {name: (out / f"profile-{name}.txt", subprocess.Popen(
        [spy, "record", "--rate", "200", "--duration", str(seconds), "--format", "raw",
         "--function", "--nonblocking", "--output", str(out / f"profile-{name}.txt"),
         "--pid", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)) for name, pid in pids.items()}

    def collect() -> dict:
        found = {}
        for name, (raw, process) in running.items():
            if process.wait() == 0 and raw.exists():
                stacks, idle = flamegraph.without_idle(flamegraph.read(raw))
                (out / f"profile-{name}.svg").write_text(flamegraph.render(
                    stacks, f"{name}, under load (py-spy; {idle:.0%} idle waits left out)"))
                found[name] = {**flamegraph.top_functions(stacks), "idle": round(idle, 3)}
        return found
    return collect


def stack_benchmark(args, workdir: Path, out: Path) -> dict:
    import grpc

    from load_tests import run
    from recsys.v1 import recommend_pb2, recommend_pb2_grpc
    from tools.stack import Stack

    stack = Stack.on_free_ports(workdir)
    curve = []
    try:
        print("stack: starting on free ports...", flush=True)
        stack.start(progress=None)
        target = stack.address("services/router")
        pids = {name.rsplit("/", 1)[-1]: p.popen.pid for name, p in stack.processes.items()}
        with grpc.insecure_channel(target) as channel:
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            users = iter(range(10**9))
            recommend = run.sequential(lambda: stub.Recommend(recommend_pb2.RecommendRequest(
                user_id=str(next(users) % NUM_USERS + 1), num_results=10), timeout=2),
                args.calls, pids)
        print(f"stack: Recommend CPU {recommend['cpu_ms_per_call']} ms per call "
              f"({recommend['cpu_ms_per_call_by_process']})", flush=True)
        for users_count in args.users:
            print(f"stack: locust, {users_count} users for {args.seconds} s...", flush=True)
            point = run.run_locust(target, users_count, args.seconds, out, pids)
            curve.append(point)
            print(f"  {point['rps']} RPS, p50 {point['p50_ms']} ms, p99 {point['p99_ms']} ms, "
                  f"{point['failures']} failures; CPU per Recommend "
                  f"{point.get('stack_cpu_ms_per_request')} ms in the stack, "
                  f"{point['cpu_ms_per_request_by_process']['locust']} ms in Locust",
                  flush=True)
        # a run of its own: sampling four processes costs CPU the curve must not pay
        print(f"stack: profiling every service, locust {args.profile_users} users for "
              f"{args.seconds} s...", flush=True)
        collect = profiled(pids, args.seconds - 5, out)
        run.run_locust(target, args.profile_users, args.seconds, out)
        profile = collect()
    finally:
        stack.stop()
    echo = run.echo_baseline(args.calls)
    print(f"stack: bare gRPC echo CPU {echo['cpu_ms_per_call']} ms per call", flush=True)
    floor = run.relay_floor(args.calls)
    print(f"stack: the same topology of bare relays, CPU {floor['cpu_ms_per_call']} ms per "
          f"call ({floor['cpu_ms_per_call_by_process']})", flush=True)
    return {"recommend": recommend, "echo": echo, "relay_floor": floor, "curve": curve,
            "profile": profile,
            "cpu_in_echoes": round(recommend["cpu_ms_per_call"] / echo["cpu_ms_per_call"], 1),
            "cpu_in_relay_floors": round(recommend["cpu_ms_per_call"]
                                         / floor["cpu_ms_per_call"], 1)}


def plots(summary: dict, out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    search = summary["search"]
    if search:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        sizes = [r["items"] for r in search]
        left.plot(sizes, [r["exact"]["p99_ms"] for r in search], "o-", label="exact p99")
        for probes in search[0]["ivf"]:
            left.plot(sizes, [r["ivf"][probes]["p99_ms"] for r in search], "o-",
                      label=f"IVF {probes} probes p99")
            right.plot(sizes, [r["ivf"][probes]["recall_at_100"] for r in search], "o-",
                       label=f"IVF {probes} probes")
        for axis in (left, right):
            axis.set_xscale("log")
            axis.set_xlabel("catalog items")
            axis.legend(fontsize=8)
        left.set_yscale("log")
        left.set_ylabel("top-100 search, ms")
        right.set_ylabel("recall@100 vs exact (700 excluded)")
        fig.tight_layout()
        fig.savefig(out / "search.png", dpi=100)
        names.append("search.png")
    stack = summary.get("stack")
    if stack:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        rps = [p["rps"] for p in stack["curve"]]
        left.plot(rps, [p["p50_ms"] for p in stack["curve"]], "o-", label="p50")
        left.plot(rps, [p["p99_ms"] for p in stack["curve"]], "o-", label="p99")
        for point in stack["curve"]:
            left.annotate(f"{point['users']}u", (point["rps"], point["p99_ms"]), fontsize=8)
        left.set_xlabel("Recommend RPS (Locust)")
        left.set_ylabel("latency, ms")
        left.legend()
        by_process = stack["recommend"]["cpu_ms_per_call_by_process"]
        floor = stack.get("relay_floor", {}).get("cpu_ms_per_call_by_process", {})
        at = np.arange(len(by_process))
        right.bar(at - 0.2, list(by_process.values()), 0.4, color="#c44e52",
                  label="Recommend")
        right.bar(at + 0.2, [floor.get(name, 0) for name in by_process], 0.4,
                  color="#8c8c8c", label="same topology, bare relays")
        right.set_xticks(at, list(by_process))
        right.axhline(stack["echo"]["cpu_ms_per_call"], color="black", linestyle="--",
                      label="one bare gRPC echo")
        right.set_ylabel("CPU ms per Recommend")
        if floor:
            right.set_title(f"{stack['recommend']['cpu_ms_per_call']} ms in all; bare relays: "
                            f"{stack['relay_floor']['cpu_ms_per_call']} ms", fontsize=9)
        right.legend()
        fig.tight_layout()
        fig.savefig(out / "stack.png", dpi=100)
        names.append("stack.png")
    return names


def write_report(summary: dict, out: Path) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    images = "".join(f'<p><img src="{name}"></p>' for name in plots(summary, out))
    rows = "".join(
        f"<tr><td>{r['items']:,}</td><td>{r['exact']['p50_ms']} / {r['exact']['p99_ms']}</td>"
        + "".join(f"<td>{h['p50_ms']} / {h['p99_ms']} ms, recall@100 {h['recall_at_100']}, "
                  f"exact top 10 found {h['exact_top_10_found']}</td>"
                  for h in r["ivf"].values())
        + f"<td>{r['build_s']} s</td><td>{r['load_s']} s</td><td>{r['file_mb']} MB</td></tr>"
        for r in summary["search"])
    profile = (summary.get("stack") or {}).get("profile", {})
    tops = "".join(
        f'<h3>{name}</h3><p>{functions["idle"]:.0%} of the samples were idle waits '
        f'(event loop, worker queues), left out below.</p>'
        f'<p><a href="profile-{name}.svg"><img src="profile-{name}.svg" '
        f'width="100%"></a></p><table border=1 cellpadding=3><tr><th>self</th>'
        f'<th>function</th><th>total</th><th>function (with its callees)</th></tr>'
        + "".join(f"<tr><td>{s_share:.1%}</td><td><code>{html.escape(s_frame)}</code></td>"
                  f"<td>{t_share:.1%}</td><td><code>{html.escape(t_frame)}</code></td></tr>"
                  for (s_frame, s_share), (t_frame, t_share)
                  in zip(functions["self"], functions["total"]))
        + "</table>" for name, functions in profile.items())
    probe_counts = "".join(f"<th>IVF, {b} probes</th>" for b in (summary["search"][0]["ivf"]
                                                        if summary["search"] else []))
    (out / "report.html").write_text(
        "<!doctype html><title>Scale benchmark</title><h1>Scale benchmark</h1>"
        f"<h2>Top-100 search, one query, one thread, {EXCLUDED} items excluded</h2>"
        f"<table border=1 cellpadding=4><tr><th>items</th><th>exact p50 / p99 ms</th>"
        f"{probe_counts}<th>build</th><th>load</th><th>files</th></tr>{rows}</table>{images}"
        "<h2>Where each service spends its samples under load</h2><p>py-spy flame graphs: "
        "callers below, hover for shares; time in native code shows as its Python caller."
        "</p>"
        f"{tops}"
        f"<h2>All figures</h2><pre>{json.dumps(summary, indent=1)}</pre>\n")
    print(f"report: {out / 'report.html'}, {out / 'summary.json'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="var")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--probes", type=int, nargs="+", default=[32, 64, 96, 128],
                        help="IVF cells scanned per query (nprobe) to measure")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seconds", type=int, default=15, help="per Locust point")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--profile-users", type=int, default=8,
                        help="after the curve, profile every service (py-spy) under this "
                             "many Locust users")
    parser.add_argument("--skip-stack", action="store_true", help="search figures only")
    parser.add_argument("--out", default=str(ROOT / "reports" / "scale"))
    args = parser.parse_args(argv)
    workdir, out = Path(args.workdir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    version = newest_retrieval(workdir)
    print(f"retrieval version {version.name}: query embeddings of {args.queries} users...",
          flush=True)
    queries = query_embeddings(version, workdir, args.queries)
    summary: dict = {"version": int(version.name), "excluded_per_query": EXCLUDED}
    with tempfile.TemporaryDirectory() as tmp:
        summary["search"] = search_benchmark(args, version, queries, Path(tmp))
        if not args.skip_stack:
            largest = max(args.sizes)
            repo = large_catalog_repo(workdir, version, largest, Path(tmp))
            print(f"get_candidates: the trained catalog and {largest:,} items behind the "
                  "same version, calls in turn...", flush=True)
            summary["get_candidates"] = get_candidates(
                workdir, args.calls, {"trained": None, str(largest): repo})
            found = summary["get_candidates"]
            found["p99_ratio"] = round(found[str(largest)]["p99_ms"]
                                       / found["trained"]["p99_ms"], 2)
            print(f"  {found}", flush=True)
            summary["stack"] = stack_benchmark(args, workdir, out)
    write_report(summary, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
