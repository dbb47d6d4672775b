"""The replay's results: progress lines, replay.json, replay.md and replay.html (plots of
Recall@k and NDCG@k per cut with their intervals, the experiment report's style)."""
from __future__ import annotations

import html as escape
import json
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from pipelines.experiments.report import STYLE, svg  # noqa: E402

SERVED, RETRIEVAL = "Recommend (served)", "two-tower retrieval alone"
MERGED = "candidate sources blended (no ranking)"
GROUPS = ("known users", "new users")
METRICS = ("recall", "ndcg")


def is_non_personalised(method: str) -> bool:
    return method == "most popular" or method.startswith("trending")


def is_baseline(method: str) -> bool:
    return method not in (SERVED, RETRIEVAL, MERGED)


def best_baseline(scores: dict[str, dict], metric: str) -> tuple[str, float]:
    """The baseline with the highest mean of `metric` in one group of one cut."""
    candidates = {m: s[metric]["mean"] for m, s in scores.items() if is_baseline(m)}
    name = max(candidates, key=candidates.get)
    return name, candidates[name]


def ratios(result) -> dict[str, dict[str, float]]:
    """Served / best baseline, per group and metric (absent when nothing was served)."""
    out = {}
    for group, scores in result.scores.items():
        if SERVED in scores:
            out[group] = {metric: scores[SERVED][metric]["mean"] / best_baseline(scores, metric)[1]
                          for metric in METRICS if best_baseline(scores, metric)[1] > 0}
    return out


def _cell(interval: dict) -> str:
    return f"{interval['mean']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def progress_lines(result, progress) -> None:
    for group, scores in result.scores.items():
        progress(f"  {group} ({next(iter(scores.values()))['users']}): " + "; ".join(
            f"{m} {s['recall']['mean']:.3f}/{s['ndcg']['mean']:.3f}" for m, s in scores.items()))
    for group, values in ratios(result).items():
        progress(f"  served / best baseline, {group}: " + ", ".join(
            f"{m} {v:.2f}x" for m, v in values.items()))
    for v in result.online:
        progress(f"  online check, {v['model']} {v['version']} {v['metric']}: "
                 f"{_online(v)}")


def _online(v: dict) -> str:
    """One verdict of the online quality check: figure [interval] vs promise: status."""
    interval = f" [{v['low']:.3f}, {v['high']:.3f}]" if v["low"] is not None else ""
    promise = f" vs promise {v['promise']:.3f}" if v["promise"] is not None else ""
    return f"{v['online']:.3f}{interval} ({v['samples']} samples){promise}: {v['status']}"


def markdown_table(results, config) -> str:
    k = config.k
    lines = []
    for group in GROUPS:
        lines += [f"\n### {group.capitalize()}\n",
                  f"| cut | users | method | Recall@{k} [95% CI] | NDCG@{k} [95% CI] | "
                  "coverage | long-tail share |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in results:
            scores = r.scores.get(group, {})
            best = {m: best_baseline(scores, m)[0] for m in METRICS} if scores else {}
            for method, s in scores.items():
                cells = [f"**{_cell(s[m])}**" if best.get(m) == method else _cell(s[m])
                         for m in METRICS]
                lines.append(f"| {r.quantile} | {s['users']} | {method} | {cells[0]} | "
                             f"{cells[1]} | {s['coverage']:.3f} | {s['long_tail']:.3f} |")
        summary = [f"{r.quantile}: " + ", ".join(f"{m} {v:.2f}x" for m, v in
                                                  ratios(r).get(group, {}).items())
                   for r in results if ratios(r).get(group)]
        if summary:
            lines.append(f"\nServed / best baseline ({group}): " + "; ".join(summary))
    online = [(r.quantile, v) for r in results for v in r.online]
    if online:
        lines += ["\n### The answers judged by the online quality check\n",
                  "Labels: the ratings of the 14 days after each answer (pipelines/replay/"
                  "online.py); promise: the version's evaluation.json.\n",
                  "| cut | model | version | metric | online [95% CI] (samples) vs promise: "
                  "status |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {q} | {v['model']} | {v['version']} | {v['metric']} | {_online(v)} |"
                  for q, v in online]
    return "\n".join(lines) + "\n"


def _plot(results, group: str, metric: str, k: int) -> str:
    methods = list(dict.fromkeys(m for r in results for m in r.scores.get(group, {})))
    width = 0.8 / max(len(methods), 1)
    figure, ax = plt.subplots(figsize=(8, 3))
    for j, method in enumerate(methods):
        xs, means, errors = [], [], [[], []]
        for i, r in enumerate(results):
            s = r.scores.get(group, {}).get(method)
            if s:
                xs.append(i + j * width)
                means.append(s[metric]["mean"])
                errors[0].append(s[metric]["mean"] - s[metric]["low"])
                errors[1].append(s[metric]["high"] - s[metric]["mean"])
        ax.bar(xs, means, width, yerr=errors, label=method, capsize=2,
               color="#b00" if method == SERVED else None)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(results))],
                  [f"cut {r.quantile}" for r in results])
    ax.set_ylabel(f"{'Recall' if metric == 'recall' else 'NDCG'}@{k}")
    ax.set_title(f"{group}: {metric}@{k} with 95% bootstrap intervals", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    return svg(figure)


def html(results, config, source: str, table: str) -> str:
    body = [f"<h1>Replay: what Recommend serves, judged on the future</h1>"
            f"<p>Data: {escape.escape(source)}. Each cut trains on the ratings before it "
            f"and scores the lists on the ratings after it (seen items removed).</p>"]
    for group in GROUPS:
        body.append(f"<h2>{group.capitalize()}</h2>")
        body += [_plot(results, group, metric, config.k) for metric in METRICS]
    body.append(f"<h2>Table</h2><pre>{escape.escape(table)}</pre>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>replay</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def write(results, config, source: str, seconds: float, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results, config)
    document = {"source": source, "config": asdict(config), "seconds": round(seconds, 1),
                "cuts": [{**asdict(r), "served_over_best_baseline": ratios(r)}
                         for r in results]}
    paths = [out / "replay.json", out / "replay.md", out / "replay.html"]
    paths[0].write_text(json.dumps(document, indent=2) + "\n")
    paths[1].write_text(f"# Replay ({source})\n{table}")
    paths[2].write_text(html(results, config, source, table))
    return paths
