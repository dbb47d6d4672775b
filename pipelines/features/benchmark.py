"""Feature store benchmark: prints figures, writes reports/features/benchmark.json.

  python -m pipelines.features.benchmark [--rows 100000 1000000] [--reads 500]

Online reads of 1 user + 100 items (the ranking service's one batched call) from SQLite
and from a real redis-server started on a free loopback port; point-in-time training set
retrieval (get_historical_features) for the given entity-row counts; materialization
throughput. All on generated data, in one process, so the figures compare.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data import synthetic
from pipelines.features import ingest
from libs.feature_store_config import FeatureStoreConfig, OnlineStore

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis() -> tuple[str, subprocess.Popen]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("error: redis-server not found (apt-get install redis-server)")
    port = _free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"127.0.0.1:{port}", process
        time.sleep(0.05)
    process.kill()
    raise SystemExit("error: redis-server did not start")


def online_reads(store, data, reads: int) -> dict:
    service = store.get_feature_service("ranking")
    users = data.users.user_id.to_numpy()
    items = data.items.item_id.to_numpy()
    rng = np.random.default_rng(0)
    latencies = []
    for i in range(reads + 20):
        user = users[rng.integers(len(users))]
        rows = [{"user_id": user, "item_id": item}
                for item in rng.choice(items, 100, replace=False)]
        start = time.perf_counter()
        store.get_online_features(features=service, entity_rows=rows)
        if i >= 20:  # warm-up
            latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    return {"reads": reads, "p50_ms": round(float(np.median(latencies)), 2),
            "p99_ms": round(latencies[int(0.99 * len(latencies)) - 1], 2)}


def historical(store, data, rows: int) -> float:
    sample = data.ratings.sample(rows, replace=rows > len(data.ratings), random_state=0)
    entity_df = pd.DataFrame({
        "user_id": sample.user_id.to_numpy(), "item_id": sample.item_id.to_numpy(),
        "event_timestamp": pd.to_datetime(sample.timestamp.to_numpy(), unit="s", utc=True)})
    start = time.perf_counter()
    store.get_historical_features(entity_df=entity_df, features=[
        "user_profile:age", "item_profile:genres", "user_activity:user_rating_count",
        "item_popularity:item_rating_count"]).to_df()
    return round(time.perf_counter() - start, 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="entity rows of the point-in-time training sets")
    parser.add_argument("--reads", type=int, default=500)
    parser.add_argument("--out", default=str(ROOT / "reports" / "features"))
    args = parser.parse_args(argv)
    data = synthetic.generate(6040, 3706, max(args.rows + [100_000]) // 2, seed=7)
    print(f"data: {len(data.ratings):,} ratings, {len(data.users):,} users, "
          f"{len(data.items):,} items", flush=True)
    results: dict = {}
    address, redis_process = _start_redis()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for kind, config in (
                    ("sqlite", FeatureStoreConfig()),
                    ("redis", FeatureStoreConfig(online_store=OnlineStore(
                        type="redis", connection_string=address)))):
                start = time.perf_counter()
                store = ingest.ingest(data, config, Path(tmp) / kind, progress=None)
                seconds = time.perf_counter() - start
                rows = sum(len(pd.read_parquet(p)) for p in
                           (Path(tmp) / kind / "features" / "offline").glob("*.parquet"))
                results[kind] = {"ingest_seconds": round(seconds, 1),
                                 "rows_per_second": round(rows / seconds),
                                 "online_1_user_100_items": online_reads(store, data,
                                                                         args.reads)}
                print(f"{kind}: {results[kind]}", flush=True)
            results["historical_seconds"] = {str(n): historical(store, data, n)
                                             for n in args.rows}
            print(f"get_historical_features: {results['historical_seconds']}", flush=True)
    finally:
        redis_process.terminate()
        redis_process.wait(10)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"report: {out / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
