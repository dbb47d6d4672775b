"""Feature store benchmark: prints figures, writes reports/features/benchmark.{json,html}.

  python -m pipelines.features.benchmark [--workdir var] [--ratings 500000]
                                         [--rows 100000 1000000] [--reads 500]

On generated data (`--ratings`), in one process so the figures compare:
  batch job        the Beam feature job (DirectRunner, training environment): rows/s
  materialization  into SQLite and into a real redis-server on a free loopback port
  online reads     1 user + 100 items, both stores: Feast's get_online_features and the
                   services' thin reader (libs/online_store.py) on the same draws; the
                   candidate service's periodic re-read of every item's trend row
  training sets    get_historical_features (DuckDB offline store) for `--rows` label rows
  streaming        the stream worker against the Redis store: event published -> visible
                   in the online store (one probe at a time), and a backlog's drain rate
Through the ranking service (needs `make train` in --workdir): the model server and the
ranking service start on free ports with their features in Redis; Rank calls with 100
candidates; the service's own feature-read histogram gives what it waited for features
(p50, p99, share within the 5 ms budget), the client gives the Rank round trip.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from libs.feature_store import open_feast
from libs.feature_store_config import FeatureStoreConfig, OnlineStore
from pipelines.data import synthetic
from pipelines.features import ingest, tables

ROOT = Path(__file__).resolve().parents[2]
BUDGET_MS = 5.0


def percentiles(latencies_ms: list[float]) -> dict:
    ordered = sorted(latencies_ms)
    return {"n": len(ordered), "p50_ms": round(float(np.median(ordered)), 2),
            "p99_ms": round(ordered[max(0, int(0.99 * len(ordered)) - 1)], 2)}


def online_reads(store, client, users, items, reads: int) -> dict:
    """1 user + 100 items, the same draws through Feast's get_online_features and through
    the services' client (libs/online_store.py's thin reader, item cache off)."""
    import asyncio

    service = store.get_feature_service("ranking")
    rng = np.random.default_rng(0)
    draws = [(str(users[rng.integers(len(users))]),
              [str(i) for i in rng.choice(items, 100, replace=False)])
             for _ in range(reads + 20)]

    def feast(user, chosen):
        store.get_online_features(features=service, entity_rows=[
            {"user_id": user, "item_id": item} for item in chosen])

    async def thin():
        latencies = []
        for i, (user, chosen) in enumerate(draws):
            start = time.perf_counter()
            await client.ranking_features(user, chosen)
            if i >= 20:  # warm-up
                latencies.append((time.perf_counter() - start) * 1000)
        return latencies

    feast_latencies = []
    for i, draw in enumerate(draws):
        start = time.perf_counter()
        feast(*draw)
        if i >= 20:
            feast_latencies.append((time.perf_counter() - start) * 1000)
    ours, theirs = percentiles(asyncio.run(thin())), percentiles(feast_latencies)
    return {"services_reader": ours, "feast_get_online_features": theirs,
            "p99_ratio": round(ours["p99_ms"] / theirs["p99_ms"], 2)}


def trends_refresh(config_file: Path, store_dir: Path, repeats: int = 5) -> dict:
    """What the candidate service does every trends_refresh_seconds: every item's trend
    row re-read from item_popularity (libs/feature_store.py read_trends). A client of its
    own: an asyncio Redis client belongs to the event loop that opened it."""
    import asyncio

    async def timed():
        client = open_feast(config_file, store_dir)
        items, seconds = list(client.item_trends), []
        for _ in range(repeats):
            start = time.perf_counter()
            assert await client.read_trends(items), "the store did not answer"
            seconds.append(time.perf_counter() - start)
        await client.close()
        return {"items": len(items), "median_ms": round(float(np.median(seconds)) * 1000, 1)}
    return asyncio.run(timed())


def historical(store, labels: pd.DataFrame, rows: int) -> float:
    entity_df = labels.sample(rows, replace=rows > len(labels), random_state=0)
    start = time.perf_counter()
    joined = store.get_historical_features(entity_df=entity_df,
                                           features=store.get_feature_service("ranking"))
    assert len(joined.to_df()) == rows
    return round(time.perf_counter() - start, 2)


def offline_store_benchmarks(args, redis_address: str) -> dict:
    data = synthetic.generate(6040, 3706, args.ratings, seed=7)
    print(f"data: {len(data.ratings):,} ratings, {len(data.users):,} users, "
          f"{len(data.items):,} items", flush=True)
    results: dict = {}
    users, items = data.users.user_id.to_numpy(), data.items.item_id.to_numpy()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        report = ingest.run_batch_job(workdir, data)
        rows_in = sum(report["read"].values())
        results["batch_job"] = {"raw_rows": rows_in, "seconds": report["seconds"],
                                "rows_per_second": round(rows_in / report["seconds"])}
        print(f"batch job (Beam): {results['batch_job']}", flush=True)
        tables_dir = workdir / "features" / "tables"
        views = [p for p in tables_dir.iterdir() if p.name in tables.NAMES]
        table_rows = sum(len(pd.read_parquet(p)) for p in views)
        # materialization writes each entity's latest row per view
        online_rows = sum(pd.read_parquet(p).iloc[:, 0].nunique() for p in views)
        for kind, config in (("sqlite", FeatureStoreConfig()),
                             ("redis", FeatureStoreConfig(online_store=OnlineStore(
                                 type="redis", connection_string=redis_address)))):
            start = time.perf_counter()
            store = ingest.ingest(config, workdir / kind, tables_dir=tables_dir,
                                  progress=None)
            seconds = time.perf_counter() - start
            config_file = workdir / kind / "store.yaml"
            config_file.write_text(yaml.safe_dump({"online_store": {
                "type": kind, "connection_string": redis_address if kind == "redis" else ""}}))
            client = open_feast(config_file, workdir / kind / "features",
                                item_cache_seconds=0)
            results[kind] = {"materialize_seconds": round(seconds, 1),
                             "table_rows_read_per_second": round(table_rows / seconds),
                             "online_rows_written_per_second": round(online_rows / seconds),
                             "online_1_user_100_items": online_reads(
                                 store, client, users, items, args.reads),
                             "trends_refresh": trends_refresh(
                                 config_file, workdir / kind / "features")}
            print(f"{kind}: {results[kind]}", flush=True)
        results["stream"] = stream_freshness(workdir / "redis", redis_address, users, items,
                                             probes=min(args.reads, 200))
        print(f"stream worker: {results['stream']}", flush=True)
        labels = pd.read_parquet(tables_dir / "ratings")
        results["historical_seconds"] = {str(n): historical(store, labels, n)
                                         for n in args.rows}
        print(f"get_historical_features: {results['historical_seconds']}", flush=True)
    return results


def stream_freshness(workdir: Path, redis_address: str, users, items, probes: int,
                     backlog: int = 20_000) -> dict:
    import subprocess
    import sys


    from libs import feature_stream
    from tools.stack import service_env

    config_file = workdir / "store.yaml"
    config_file.write_text(yaml.safe_dump({"online_store": {
        "type": "redis", "connection_string": redis_address}}))
    store = ingest.open_store(FeatureStoreConfig(online_store=OnlineStore(
        type="redis", connection_string=redis_address)), workdir / "features")
    client = feature_stream.redis_client(redis_address)
    name = "benchmark:events"
    client.delete(name)
    worker = subprocess.Popen(
        [sys.executable, "-m", "pipelines.features.stream", "--set", f"redis={redis_address}",
         "--set", f"stream={name}", "--set", f"workdir={workdir}", "--set", "block_ms=50",
         "--set", f"feature_store_config={config_file}", "--set", "metrics_port=0",
         "--set", "log_level=WARNING"], cwd=ROOT, env=service_env())
    rng = np.random.default_rng(2)
    count = lambda user: store.get_online_features(  # noqa: E731
        features=["user_activity:user_rating_count"],
        entity_rows=[{"user_id": user}]).to_dict()["user_rating_count"][0] or 0
    try:
        latencies = []
        for i in range(probes + 5):
            user = str(users[rng.integers(len(users))])
            before = count(user)
            start = time.perf_counter()
            feature_stream.publish(client, name, user, str(items[rng.integers(len(items))]), 3)
            while count(user) == before:
                if time.perf_counter() - start > 30:
                    raise SystemExit("error: the stream worker applied nothing in 30 s")
                time.sleep(0.002)
            if i >= 5:  # the first ones open the worker's connections
                latencies.append((time.perf_counter() - start) * 1000)
        pipe = client.pipeline(transaction=False)
        for _ in range(backlog):
            pipe.xadd(name, {"user_id": str(users[rng.integers(len(users))]),
                             "item_id": str(items[rng.integers(len(items))]), "rating": 4})
        start = time.perf_counter()
        pipe.execute()
        while client.xpending(name, "feature-updater")["pending"] or client.xinfo_groups(
                name)[0]["last-delivered-id"] != client.xinfo_stream(name)["last-entry"][0]:
            time.sleep(0.05)
        drain = time.perf_counter() - start
    finally:
        worker.terminate()
        worker.wait(15)
    return {"event_to_online": percentiles(latencies),
            "backlog_events": backlog, "backlog_events_per_second": round(backlog / drain)}


def _histogram(metrics_url: str, name: str, labels: dict) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) buckets of one histogram series."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    buckets = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_bucket" and all(
                    sample.labels.get(k) == v for k, v in labels.items()):
                buckets.append((float(sample.labels["le"]), sample.value))
    return sorted(buckets)


def _bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Linear interpolation inside the bucket holding the q-quantile (as PromQL does)."""
    total = buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= q * total:
            if bound == float("inf"):
                return lower_bound
            share = (q * total - lower_count) / max(count - lower_count, 1e-9)
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def through_ranking_service(workdir: Path, redis_address: str, reads: int) -> dict:
    import grpc

    from recsys.v1 import common_pb2, ranking_pb2, ranking_pb2_grpc
    from tools import build_manifest
    from tools.stack import Stack

    tables_dir = workdir / "features" / "tables"
    if not list((workdir / "model_repo").glob("ranking/*/saved_model.pb")):
        raise SystemExit(f"error: no ranking model under {workdir}/model_repo; "
                         "run `make train` first")
    items = pd.read_parquet(tables_dir / "item_profile", columns=["item_id"]).item_id
    users = pd.read_parquet(tables_dir / "user_profile", columns=["user_id"]).user_id
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = Path(tmp)
        config = FeatureStoreConfig(online_store=OnlineStore(
            type="redis", connection_string=redis_address))
        ingest.ingest(config, store_dir, tables_dir=tables_dir, progress=None)
        config_file = store_dir / "redis.yaml"
        config_file.write_text(yaml.safe_dump({"online_store": {
            "type": "redis", "connection_string": redis_address}}))
        targets = build_manifest.load()
        for cache_seconds in (0, 60):
            stack = Stack.on_free_ports(workdir, extra={"services/ranking": [
                f"feature_store_config={config_file}",
                f"feature_store_dir={store_dir / 'features'}",
                f"item_cache_seconds={cache_seconds}", "model_timeout_ms=2000"]})
            try:
                stack.start_service(targets["services/model_server"])
                ranking = stack.start_service(targets["services/ranking"])
                results[f"item_cache_{cache_seconds}s"] = _rank_calls(
                    ranking, users, items, reads, grpc, common_pb2, ranking_pb2,
                    ranking_pb2_grpc)
            finally:
                stack.stop()
            print(f"through the ranking service, item cache {cache_seconds}s: "
                  f"{results[f'item_cache_{cache_seconds}s']}", flush=True)
    return results


def _rank_calls(ranking, users, items, reads, grpc, common_pb2, ranking_pb2,
                ranking_pb2_grpc) -> dict:
    rng = np.random.default_rng(1)
    url = f"http://127.0.0.1:{ranking.metrics_port}/metrics"
    with grpc.insecure_channel(ranking.address) as channel:
        stub = ranking_pb2_grpc.RankingServiceStub(channel)

        def call():
            candidates = [common_pb2.ScoredItem(item_id=str(i))
                          for i in rng.choice(items, 100, replace=False)]
            stub.Rank(ranking_pb2.RankRequest(user_id=str(users[rng.integers(len(users))]),
                                              candidates=candidates), timeout=10)
        for _ in range(50):  # warm-up (and, with the cache, filling it)
            call()
        before = _histogram(url, "recsys_feature_read_seconds", {"read": "ranking"})
        latencies = []
        for _ in range(reads):
            start = time.perf_counter()
            call()
            latencies.append((time.perf_counter() - start) * 1000)
        after = _histogram(url, "recsys_feature_read_seconds", {"read": "ranking"})
    window = [(bound, a - b) for (bound, a), (_, b) in zip(after, before)]
    within = next(count for bound, count in window if bound == BUDGET_MS / 1000)
    return {"feature_read_p50_ms": round(_bucket_quantile(window, 0.5) * 1000, 2),
            "feature_read_p99_ms": round(_bucket_quantile(window, 0.99) * 1000, 2),
            f"feature_reads_within_{BUDGET_MS:g}ms": round(within / window[-1][1], 4),
            "rank_rpc": percentiles(latencies)}


def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = "".join(f"<tr><th>{key}</th><td><pre>{json.dumps(value, indent=1)}</pre></td></tr>"
                   for key, value in results.items())
    (out / "benchmark.html").write_text(
        "<!doctype html><title>Feature store benchmark</title>"
        "<h1>Feature store benchmark</h1><p>Online reads of 1 user + 100 items; budget "
        f"{BUDGET_MS:g} ms from the ranking service's point of view.</p>"
        f"<table border=1 cellpadding=4>{rows}</table>\n")
    print(f"report: {out / 'benchmark.json'}, {out / 'benchmark.html'}")


def main(argv=None) -> int:
    from tools import redis_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="var", help="trained models and features")
    parser.add_argument("--ratings", type=int, default=500_000)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="entity rows of the point-in-time training sets")
    parser.add_argument("--reads", type=int, default=500)
    parser.add_argument("--out", default=str(ROOT / "reports" / "features"))
    args = parser.parse_args(argv)
    try:
        address, redis_process = redis_server.start()
    except RuntimeError as err:
        raise SystemExit(f"error: {err}") from None
    try:
        results = offline_store_benchmarks(args, address)
        results["ranking_service"] = through_ranking_service(Path(args.workdir), address,
                                                             args.reads)
    finally:
        redis_server.stop(redis_process)
    write_report(results, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
