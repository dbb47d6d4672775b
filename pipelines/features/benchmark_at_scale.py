"""Data pipeline at scale: rows/s and peak memory of each stage at 100k, 1M, 20M events.

  python -m pipelines.features.benchmark_at_scale [--events 100000 1000000 20000000]
      [--users N --items N] [--stages generate batch_job materialize training_set [train]]
      [--sample-users 0.1] [--workdir DIR] [--keep] [--out reports/data_scale]

For each size, the real commands run one after the other as child processes (so each
one's peak RSS is its own): the generator lands users, items and events
(`pipelines.data.synthetic_at_scale`), the Beam feature job (DirectRunner, training
environment), Feast apply + materialization into a real redis-server on a free loopback
port, the point-in-time training set and, asked for (`train`), the TFX pipeline on a
sample of the users. Users and items default to events / 20, at most a million each.
Prints each stage as it ends; writes summary.json and report.html (with plots); each
stage's own output goes to <workdir>/<events>/<stage>.log.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PYTHONS = {"serving": ROOT / ".venv" / "serving" / "bin" / "python",
           "training": ROOT / ".venv" / "training" / "bin" / "python"}
STAGES = ("generate", "batch_job", "materialize", "training_set")
TRAIN = "train"  # the TFX pipeline on a sample of users (--stages ... train)


def run_stage(argv: list[str], log: Path, timeout: float) -> dict:
    """Runs one command; its progress lines reach the terminal, all else the log.
    Returns seconds, peak RSS (of the process and the children it waited for) and
    whether it succeeded."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'libs' / 'protos'}",
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    start = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=out, text=True)
        deadline = threading.Timer(timeout, process.kill)  # also when it prints nothing
        deadline.start()
        for line in process.stdout:
            out.write(line)
            if line.startswith(("data:", "features:", "prepare:", "pipeline:")):
                print(f"    {line.rstrip()}", flush=True)
        _, status, usage = os.wait4(process.pid, 0)
        deadline.cancel()
    return {"seconds": round(time.monotonic() - start, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "ok": os.waitstatus_to_exitcode(status) == 0}


def _parquet_rows(directory: Path) -> int:
    import pyarrow.parquet as pq
    return sum(pq.ParquetFile(f).metadata.num_rows for f in directory.glob("*.parquet"))


def stage_rows(stage: str, workdir: Path, generated: dict) -> int:
    """What a stage processed: rows landed, raw rows read, feature-table rows
    materialized, label rows joined."""
    tables_dir = workdir / "features" / "tables"
    if stage == "generate":
        return generated["events"] + generated["users"] + generated["items"]
    if stage == "batch_job":
        return sum(json.loads((tables_dir / "report.json").read_text())["read"].values())
    if stage == "materialize":
        return sum(_parquet_rows(p) for p in tables_dir.iterdir()
                   if p.is_dir() and p.name not in ("ratings", "quarantine"))
    if stage == TRAIN:
        snapshot = max((workdir / "data" / "examples").glob("span-*/snapshot.json"))
        return json.loads(snapshot.read_text())["sampled_rows"]
    snapshot = max((workdir / "data" / "training_sets").glob("span-*/snapshot.json"))
    return json.loads(snapshot.read_text())["rows"]


def one_size(events: int, users: int, items: int, stages, workdir: Path,
             redis_address: str, timeout: float, sample_users: float = 1.0) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    store_config = workdir / "redis.yaml"
    store_config.write_text(yaml.safe_dump({"online_store": {
        "type": "redis", "connection_string": redis_address}}))
    commands = {
        "generate": ("serving", ["-m", "pipelines.data.synthetic_at_scale", "--workdir",
                                 str(workdir), "--users", str(users), "--items", str(items),
                                 "--events", str(events)]),
        "batch_job": ("training", ["-m", "pipelines.features.batch_job", "--workdir",
                                   str(workdir)]),
        "materialize": ("serving", ["-m", "pipelines.features.ingest", "--workdir",
                                    str(workdir), "--config", str(store_config)]),
        "training_set": ("serving", ["-m", "pipelines.features.training_set", "--workdir",
                                     str(workdir), "--config", str(store_config)]),
        TRAIN: ("training", ["-m", "pipelines.training.run", "--workdir", str(workdir),
                             "--set", f"sample_users={sample_users}"]),
    }
    result = {"events": events, "users": users, "items": items, "stages": {},
              "sample_users": sample_users}
    generated = {"events": events, "users": users, "items": items}
    for stage in stages:
        python, args = commands[stage]
        print(f"  {stage} ...", flush=True)
        figures = run_stage([str(PYTHONS[python]), *args], workdir / f"{stage}.log",
                            timeout)
        if figures["ok"]:
            if stage == "generate":
                last = (workdir / "generate.log").read_text().strip().splitlines()[-1]
                generated = {k: int(float(v)) for k, v in
                             (pair.split("=") for pair in last.split())
                             if k in ("events", "users", "items")}
            rows = stage_rows(stage, workdir, generated)
            figures.update(rows=rows, rows_per_second=round(rows / figures["seconds"]))
        result["stages"][stage] = figures
        print(f"  {stage}: {figures}", flush=True)
        if not figures["ok"]:
            print(f"  {stage} failed: see {workdir / f'{stage}.log'}", flush=True)
            break
    return result


def plot(results: list[dict], out: Path) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for stage in (*STAGES, TRAIN):
        points = [(r["events"], r["stages"][stage]) for r in results
                  if r["stages"].get(stage, {}).get("ok")]
        if points:
            sizes = [events for events, _ in points]
            left.plot(sizes, [s["rows_per_second"] for _, s in points], "o-", label=stage)
            right.plot(sizes, [s["peak_rss_mib"] / 1024 for _, s in points], "o-",
                       label=stage)
    for axis in (left, right):
        axis.set_xscale("log")
        axis.set_xlabel("events")
        axis.legend(fontsize=8)
    left.set_yscale("log")
    left.set_ylabel("rows per second")
    right.set_ylabel("peak RSS, GiB")
    fig.tight_layout()
    fig.savefig(out / "stages.png", dpi=100)
    plt.close(fig)
    return "stages.png"


def write_report(results: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    columns = [*STAGES, *([TRAIN] if any(TRAIN in r["stages"] for r in results) else [])]
    (out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = "".join(
        f"<tr><td>{r['events']:,}</td><td>{r['users']:,}</td><td>{r['items']:,}</td>"
        + "".join(
            (f"<td>{s['rows_per_second']:,} rows/s<br>{s['seconds']} s, "
             f"{s['peak_rss_mib']:,} MiB</td>" if s.get("ok") else
             "<td>failed</td>" if s else "<td>-</td>")
            for s in (r["stages"].get(stage, {}) for stage in columns)) + "</tr>"
        for r in results)
    (out / "report.html").write_text(
        "<!doctype html><meta charset=utf-8><title>Data pipeline at scale</title>"
        "<h1>Data pipeline at scale</h1><p>Each stage is its own process; peak RSS is "
        "its maximum resident set size.</p><table border=1 cellpadding=4><tr><th>events"
        "</th><th>users</th><th>items</th>" + "".join(
            f"<th>{s}</th>" if s != TRAIN else
            f"<th>train ({results[0]['sample_users']:.0%} of users)</th>" for s in columns)
        + f"</tr>{rows}</table><p><img src=\"{plot(results, out)}\"></p>\n")
    print(f"report: {out / 'report.html'}", flush=True)


def main(argv=None) -> int:
    from tools import redis_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+",
                        default=[100_000, 1_000_000, 20_000_000])
    parser.add_argument("--users", type=int, default=0, help="default: events / 20, "
                        "at most 1M")
    parser.add_argument("--items", type=int, default=0, help="default: as users")
    parser.add_argument("--stages", nargs="+", choices=(*STAGES, TRAIN), default=list(STAGES))
    parser.add_argument("--sample-users", type=float, default=0.1,
                        help="share of users the train stage trains on")
    parser.add_argument("--workdir", default=str(ROOT / "var" / "data_scale"))
    parser.add_argument("--keep", action="store_true", help="keep each size's data")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="per stage, s")
    parser.add_argument("--out", default=str(ROOT / "reports" / "data_scale"))
    args = parser.parse_args(argv)
    if min(args.events) <= 0 or args.users < 0 or args.items < 0:
        parser.error("--events must be positive, --users and --items not negative")
    if not 0 < args.sample_users <= 1:
        parser.error("--sample-users must be in (0, 1]")
    try:
        address, redis_process = redis_server.start()
    except RuntimeError as err:
        parser.error(str(err))
    results = []
    try:
        for events in args.events:
            users = args.users or min(1_000_000, max(100, events // 20))
            print(f"{events:,} events, {users:,} users, {args.items or users:,} items",
                  flush=True)
            workdir = Path(args.workdir) / str(events)
            results.append(one_size(events, users, args.items or users, args.stages,
                                    workdir, address, args.timeout, args.sample_users))
            write_report(results, Path(args.out))
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        redis_server.stop(redis_process)
    return 0 if all(s["ok"] for r in results for s in r["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
