"""The drift report: the printed table, drift.json and a one-file drift.html (inline SVG,
the experiment report's style)."""
from __future__ import annotations

import html as escape
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from pipelines.experiments.report import STYLE, svg  # noqa: E402
from pipelines.monitoring.drift import Result  # noqa: E402

RED, GREY, BLUE, ORANGE = "#b00", "#888", "#1f77b4", "#ff7f0e"


def table(results: list[Result]) -> str:
    """One line per feature and method; DRIFT where the score is over its threshold."""
    lines = [f"{'check':<12} {'feature':<14} {'method':<10} {'score':>9} {'threshold':>9} "
             f"{'':>5} {'reference':>10} {'recent':>9}"]
    for r in results:
        for i, (method, limit) in enumerate(r.thresholds.items()):
            score = r.comparison.scores[method]
            flag = "DRIFT" if method in r.drifted else ""
            rows = (f"{r.comparison.reference_rows:>10,} {r.comparison.recent_rows:>9,}"
                    if i == 0 else "")
            lines.append(f"{r.check if i == 0 else '':<12} {r.feature if i == 0 else '':<14} "
                         f"{method:<10} {score:>9.4f} {limit:>9.3g} {flag:>5} {rows}"
                         .rstrip())
    return "\n".join(lines)


def verdict(results: list[Result]) -> str:
    found = [f"{r.feature} ({', '.join(r.drifted)})" for r in results if r.detected]
    return f"drift in {len(found)} of {len(results)}: " + "; ".join(found) if found \
        else f"no drift in {len(results)} features"


def scores_plot(results: list[Result]) -> str:
    """Each score as a share of its threshold: past the red line is drift."""
    bars = [(f"{r.feature} {m}", r.comparison.scores[m] / t, m in r.drifted)
            for r in results for m, t in r.thresholds.items()]
    figure, ax = plt.subplots(figsize=(7, 0.28 * len(bars) + 0.9))
    ax.barh(range(len(bars)), [b[1] for b in bars],
            color=[RED if b[2] else GREY for b in bars])
    ax.axvline(1.0, color=RED, linewidth=1)
    ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("score / threshold", fontsize=9)
    figure.tight_layout()
    return svg(figure)


def distribution_plot(result: Result) -> str:
    """Reference and recent shares per bin or category."""
    c = result.comparison
    figure, ax = plt.subplots(figsize=(max(3.2, 0.16 * len(c.labels) + 1.5), 2.3))
    x = range(len(c.labels))
    ax.bar([i - 0.2 for i in x], c.reference, 0.4, color=BLUE, label="reference")
    ax.bar([i + 0.2 for i in x], c.recent, 0.4, color=ORANGE, label="recent")
    ax.set_xticks(list(x), c.labels, rotation=90, fontsize=6)
    scores = ", ".join(f"{m} {s:.3g}" for m, s in c.scores.items())
    ax.set_title(f"{result.feature}: {scores}", fontsize=9,
                 color=RED if result.detected else "black")
    ax.legend(fontsize=6)
    figure.tight_layout()
    return svg(figure)


def _rows(results: list[Result]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("check", "feature", "method", "score",
                                             "threshold", "drift", "reference rows",
                                             "recent rows"))
    body = []
    for r in results:
        for method, limit in r.thresholds.items():
            bad = method in r.drifted
            body.append(
                f"<tr class='{'bad' if bad else ''}'><td>{r.check}</td>"
                f"<td>{escape.escape(r.feature)}</td><td>{method}</td>"
                f"<td>{r.comparison.scores[method]:.4f}</td><td>{limit:.3g}</td>"
                f"<td>{'DRIFT' if bad else ''}</td><td>{r.comparison.reference_rows:,}</td>"
                f"<td>{r.comparison.recent_rows:,}</td></tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def html(document: dict, results: list[Result]) -> str:
    drifted = any(r.detected for r in results)
    sources = "".join(f"<li><b>{escape.escape(check)}</b>: {escape.escape(text)}</li>"
                      for check, text in document["sources"].items())
    notes = "".join(f"<li>{escape.escape(n)}</li>" for n in document["notes"])
    body = [f"<h1>Drift check {escape.escape(document['generated_at'])}</h1>",
            f"<p class='{'bad' if drifted else 'good'}'><b>"
            f"{escape.escape(verdict(results))}</b></p>",
            f"<ul>{sources}{notes}</ul>", _rows(results)]
    with plt.rc_context({"svg.fonttype": "none"}):  # text as text: a tenth of the size
        body += ["<h2>Scores</h2>", scores_plot(results), "<h2>Distributions</h2>",
                 "<div style='display:flex;flex-wrap:wrap'>"
                 + "".join(distribution_plot(r) for r in results) + "</div>"]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Drift check</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def write(document: dict, results: list[Result], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    data, page = out / "drift.json", out / "drift.html"
    data.write_text(json.dumps({**document, "results": [r.to_dict() for r in results]},
                               indent=2) + "\n")
    page.write_text(html(document, results))
    return data, page
