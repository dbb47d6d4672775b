"""Model quality benchmark: the published MovieLens protocols, our models and baselines
from the same run, as a table, learning curves and an HTML report.

  python -m pipelines.training.benchmark [--workdir var/benchmark] [--training-set PATH]
                                         [--protocols random per_user time]
                                         [--set key=value ...]

Protocols, on the newest training set (`make features` builds it):
  random    80/20 random split, seed 42 (TensorFlow Recommenders tutorials): retrieval
            top-100 accuracy with seen items kept, ranking RMSE
  per_user  per-user stratified 75/25, seed 42 (Microsoft Recommenders): Recall@10 and
            NDCG@10 with seen items removed
  time      80/20 by time (production): all of the above
For each, the TFX pipeline runs in the training environment in a workdir of its own
(`--set` overrides reach it), and this process computes most popular, EASE and a biased
matrix factorization on the same split, and for the per-user and time splits what the
candidate service serves from the pushed retrieval version (served_order.py: two-tower
and the other sources, blended; Recall@10 and NDCG@10). The cost of the pipeline:
right after it, the plain training script (pipelines/training/plain.py: the same split,
Transform and run_fns, no TFX) runs on the same split and overrides, and the report gives
both wall times (each a whole process, start to exit) and their ratio. Runs in the
serving environment (matplotlib).
Writes reports/models/benchmark.{json,md,html} and learning_curves.png.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data import prepare
from pipelines.training import baselines, evaluation, served_order

ROOT = Path(__file__).resolve().parents[2]
TRAINING_PYTHON = ROOT / ".venv" / "training" / "bin" / "python"
PROTOCOLS = {"random": 0.8, "per_user": 0.75, "time": 0.8}
MEASURES = {  # what each protocol reports: (name, key, published anchor, target)
    "random": [("top-100 accuracy", "top_k_accuracy",
                "basic 0.233, deep 0.29, context 0.25 (TFRS)", ">= 0.33"),
               ("ranking RMSE", "rmse", "DCN 0.9326, SVD 0.9387", "<= 0.915")],
    "per_user": [("Recall@10", "recall_at_10", "BPR 0.2125, BiVAE 0.219", ">= 0.24"),
                 ("NDCG@10", "ndcg_at_10", "BPR 0.442, BiVAE 0.475", ">= 0.48")],
    "time": [("top-100 accuracy", "top_k_accuracy", "", ""),
             ("Recall@10", "recall_at_10", "", ""), ("NDCG@10", "ndcg_at_10", "", ""),
             ("ranking RMSE", "rmse", "", "")],
}
LOWER_IS_BETTER = {"rmse"}
SERVED_PROTOCOLS = ("per_user", "time")  # top-10 protocols: what is served is a top 10
COST_TARGET = 3.0  # pipeline wall time at most this many times the plain script's


def run_training(module: str, workdir: Path, training_set: Path, split: str,
                 fraction: float, overrides: list[str]) -> tuple[float, str]:
    """Runs a training entry point (the pipeline or the plain script) in the training
    environment: its wall seconds, process start to exit, and what it printed."""
    command = [str(TRAINING_PYTHON), "-m", module, "--workdir", str(workdir),
               "--training-set", str(training_set), "--set", f"split={split}",
               "--set", f"train_fraction={fraction}"]
    for override in overrides:
        command += ["--set", override]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: {module} ({split}) failed:\n{result.stderr[-3000:]}")
    return round(time.monotonic() - started, 1), result.stdout


def component_seconds(output: str) -> dict[str, float]:
    """The pipeline's per-component seconds from its progress lines (run.py)."""
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^\[\s*\d+/\d+\] (\S+)\s+([\d.]+)s", output, re.M)}


def run_pipeline(workdir: Path, training_set: Path, split: str, fraction: float,
                 overrides: list[str]) -> dict:
    seconds, output = run_training("pipelines.training.run", workdir, training_set, split,
                                   fraction, overrides)
    summary = json.loads((workdir / "last_run.json").read_text())
    return {**summary.get("retrieval", {}),
            "rmse": summary.get("ranking", {}).get("root_mean_squared_error"),
            "pipeline_seconds": seconds, "pipeline_components": component_seconds(output)}


def run_plain(workdir: Path, training_set: Path, split: str, fraction: float,
              overrides: list[str]) -> dict:
    """The same training without TFX (pipelines/training/plain.py), timed likewise."""
    seconds, _ = run_training("pipelines.training.plain", workdir, training_set, split,
                              fraction, overrides)
    summary = json.loads((workdir / "plain_run.json").read_text())
    return {"plain_seconds": seconds, "plain_stages": summary["seconds"],
            "plain_rmse": summary["metrics"]["ranking"].get("val_root_mean_squared_error")}


def cost(model: dict, plain: dict) -> dict:
    return {"pipeline_seconds": model["pipeline_seconds"], **plain,
            "ratio": round(model["pipeline_seconds"] / plain["plain_seconds"], 2)}


def baseline_metrics(train: pd.DataFrame, evaluation_rows: pd.DataFrame) -> dict:
    index = baselines.Index.of(train)
    seen_matrix = index.interactions(train)
    users, items = index.codes(train)
    eval_users, eval_items = index.codes(evaluation_rows)
    truth = evaluation_rows.item_id.tolist()
    relevant = evaluation.by_user(evaluation_rows.user_id, evaluation_rows.item_id)
    popular = evaluation.most_popular(train.item_id)

    def ranked_metrics(all_top: dict, unseen_top: dict) -> dict:
        recall, ndcg = evaluation.recall_ndcg_at_k(unseen_top, relevant, 10)
        return {"top_k_accuracy": evaluation.top_k_accuracy(
                    [all_top.get(u, popular[:100]) for u in evaluation_rows.user_id], truth),
                "recall_at_10": recall, "ndcg_at_10": ndcg}

    out = {"most popular": evaluation.popularity_metrics(
        train.user_id.tolist(), train.item_id.tolist(), evaluation_rows.user_id.tolist(),
        truth)}
    ease = baselines.ease_scores(seen_matrix)
    out["EASE"] = ranked_metrics(baselines.top_items(ease, index, 100),
                                 baselines.top_items(ease, index, 10, seen_matrix))
    mf = baselines.fit_biased_mf(users, items, train.rating.to_numpy(), len(index.users),
                                 len(index.items))
    out["biased MF"] = {
        **ranked_metrics(baselines.top_items(mf.scores(), index, 100),
                         baselines.top_items(mf.scores(), index, 10, seen_matrix)),
        "rmse": float(np.sqrt(np.mean((mf.predict(eval_users, eval_items)
                                       - evaluation_rows.rating.to_numpy()) ** 2)))}
    return out


def learning_curves(workdir: Path) -> dict:
    curves = {}
    for trainer in ("retrieval_trainer", "ranking_trainer"):
        runs = sorted((workdir / "pipeline" / trainer / "model_run").glob("*/history.json"),
                      key=lambda p: int(p.parent.name))
        if runs:
            curves[trainer] = json.loads(runs[-1].read_text())
    return curves


def table(results: dict) -> list[dict]:
    rows = []
    for protocol, measures in MEASURES.items():
        if protocol not in results:
            continue
        found = results[protocol]
        for label, key, anchor, target in measures:
            values = {"ours": found["model"].get(key),
                      "served": (found.get("served") or {}).get(key),
                      **{name: b.get(key) for name, b in found["baselines"].items()}}
            known = {n: v for n, v in values.items() if v is not None}
            best = (min if key in LOWER_IS_BETTER else max)(known, key=known.get)
            rows.append({"protocol": protocol, "measure": label, **values,
                         "best": best, "published": anchor, "target": target})
    return rows


def _cell(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def write_report(results: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    rows = table(results)
    (out / "benchmark.json").write_text(json.dumps({"results": results, "table": rows},
                                                   indent=2) + "\n")
    columns = ["protocol", "measure", "ours", "served", "most popular", "EASE", "biased MF",
               "best", "published", "target"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for protocol, found in results.items():
        for axis, (trainer, metric) in zip(axes, (("retrieval_trainer", "loss"),
                                                  ("ranking_trainer",
                                                   "root_mean_squared_error"))):
            curve = found["curves"].get(trainer)
            if not curve:
                continue
            axis.plot(curve["steps"], curve[metric], label=f"{protocol} train")
            if f"val_{metric}" in curve:
                axis.plot(curve["steps"], curve[f"val_{metric}"], "--",
                          label=f"{protocol} eval")
            axis.set_title(f"{trainer.split('_')[0]}: {metric}")
            axis.set_xlabel("training step")
    for axis in axes:
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "learning_curves.png", dpi=110)
    html_rows = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns)
                        + "</tr>" for row in rows)
    (out / "benchmark.html").write_text(
        "<!doctype html><title>Model benchmark</title><h1>MovieLens protocols</h1>"
        "<table border=1 cellpadding=4><tr>" + "".join(f"<th>{c}</th>" for c in columns)
        + f"</tr>{html_rows}</table><img src='learning_curves.png'>\n")
    costs = [(protocol, found["cost"]) for protocol, found in results.items()
             if "cost" in found]
    if costs:
        lines += ["", "| protocol | pipeline s | plain script s | ratio | target |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {protocol} | {c['pipeline_seconds']:.1f} | {c['plain_seconds']:.1f} | "
                  f"{c['ratio']:.2f}x | <= {COST_TARGET:g}x |" for protocol, c in costs]
        for protocol, c in costs:  # where the time goes, components of a second or more
            parts = {k: v for k, v in results[protocol]["model"].get(
                "pipeline_components", {}).items() if v >= 1.0}
            lines.append(f"\n{protocol}: pipeline " + ", ".join(
                f"{k} {v:.1f}s" for k, v in parts.items()) + "; plain script " + ", ".join(
                f"{k} {v:.1f}s" for k, v in c["plain_stages"].items()))
        html_costs = "".join(
            f"<tr><td>{protocol}</td><td>{c['pipeline_seconds']:.1f}</td>"
            f"<td>{c['plain_seconds']:.1f}</td><td>{c['ratio']:.2f}x</td></tr>"
            for protocol, c in costs)
        with open(out / "benchmark.html", "a") as f:
            f.write("<h2>Cost: TFX pipeline vs plain training script (wall seconds, same "
                    "run)</h2><table border=1 cellpadding=4><tr><th>protocol</th>"
                    "<th>pipeline</th><th>plain script</th><th>ratio</th></tr>"
                    f"{html_costs}</table>\n")
    (out / "benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"report: {out}/benchmark.{{json,md,html}}, learning_curves.png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="var/benchmark")
    parser.add_argument("--training-set", default="var/data/training_sets",
                        help="a training set (span-<S>), or a directory of them: the newest")
    parser.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS),
                        default=list(PROTOCOLS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="pipeline config override for every run")
    parser.add_argument("--out", default=str(ROOT / "reports" / "models"))
    parser.add_argument("--skip-cost", action="store_true",
                        help="do not time the plain training script next to the pipeline")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the served order loads the model
    try:
        training_set = Path(args.training_set)
        if not (training_set / "snapshot.json").exists():
            training_set = prepare.newest_training_set(training_set)
        _, rows = prepare.read_training_set(training_set)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = {}
    for protocol in args.protocols:
        fraction = PROTOCOLS[protocol]
        train, evaluation_rows = prepare.split_rows(rows, protocol, fraction, seed=42)
        workdir = Path(args.workdir) / protocol
        # from scratch: an earlier run's blessed model would be the gates' reference
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"{protocol}: {len(train):,} train / {len(evaluation_rows):,} eval; "
              "running the pipeline ...", flush=True)
        model = run_pipeline(workdir, training_set, protocol, fraction, args.set)
        if not args.skip_cost:
            print(f"{protocol}: running the plain training script ...", flush=True)
            plain = run_plain(Path(args.workdir) / f"{protocol}-plain", training_set,
                              protocol, fraction, args.set)
        served = None
        if protocol in SERVED_PROTOCOLS:
            print(f"{protocol}: what the candidate service serves ...", flush=True)
            served = served_order.served_metrics(
                workdir / "model_repo", train, evaluation_rows,
                rows.drop_duplicates("item_id")[["item_id", "genres"]],
                progress=lambda line: print(f"{protocol}: {line}", flush=True))
        results[protocol] = {"model": model, "served": served,
                             **({} if args.skip_cost else {"cost": cost(model, plain)}),
                             "baselines": baseline_metrics(train, evaluation_rows),
                             "curves": learning_curves(workdir)}
        print(f"{protocol}: model {json.dumps(model)}", flush=True)
        if "cost" in results[protocol]:
            print(f"{protocol}: cost {json.dumps(results[protocol]['cost'])}", flush=True)
    write_report(results, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
