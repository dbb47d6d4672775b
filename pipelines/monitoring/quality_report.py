"""The online quality report: the printed verdicts, quality.json and a one-file
quality.html (inline SVG, the experiment report's style)."""
from __future__ import annotations

import html as escape
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from pipelines.experiments.report import STYLE, svg  # noqa: E402

RED, BLUE, GREY = "#b00", "#1f77b4", "#888"


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 100 \
        else f"{value:.4g}"


def table(verdicts: list[dict]) -> str:
    """One line per delayed-label figure; BELOW where the version fell below its promise."""
    lines = [f"{'model':<10} {'version':>11} {'metric':<15} {'online':>8} "
             f"{'95% interval':>18} {'promise':>8} {'samples':>8}  status"]
    for v in verdicts:
        interval = f"[{_number(v['low'])}, {_number(v['high'])}]" \
            if v["low"] is not None else ""
        status = "BELOW" if v["status"] == "below" else v["status"]
        lines.append(f"{v['model']:<10} {v['version']:>11} {v['metric']:<15} "
                     f"{_number(v['online']):>8} {interval:>18} {_number(v['promise']):>8} "
                     f"{v['samples']:>8,}  {status}")
    return "\n".join(lines)


def _html_table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{escape.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = "".join(f"<td>{escape.escape(_number(r.get(c)))}</td>" for c in columns)
        body.append(f"<tr class='{'bad' if r.get('status') == 'below' else ''}'>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def promise_plot(verdicts: list[dict]) -> str:
    """Each delayed-label figure over its promise, with its interval: 1 is the promise."""
    shown = [v for v in verdicts if v["promise"] and v["low"] is not None]
    figure, ax = plt.subplots(figsize=(7, 0.45 * len(shown) + 1))
    for i, v in enumerate(shown):
        ax.errorbar(v["online"] / v["promise"], i, fmt="o",
                    color=RED if v["status"] == "below" else BLUE,
                    xerr=[[(v["online"] - v["low"]) / v["promise"]],
                          [(v["high"] - v["online"]) / v["promise"]]])
    ax.axvline(1.0, color=GREY, linewidth=1)
    ax.set_yticks(range(len(shown)), [f"{v['model']} {v['version']} {v['metric']}"
                                      for v in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("online / offline promise (rmse: lower is better)", fontsize=9)
    figure.tight_layout()
    return svg(figure)


def html(document: dict, figures: list[dict], verdicts: list[dict]) -> str:
    below = document["below_promise"]
    verdict = ("a served version is below its promise" if below
               else "no version below its promise")
    engagement, labels = document["engagement_window"], document["label_window"]
    body = [f"<h1>Online quality {escape.escape(document['generated_at'])}</h1>",
            f"<p class='{'bad' if below else 'good'}'><b>{verdict}</b></p>",
            f"<p>Engagement: {document['responses']:,} answers {engagement['start']} .. "
            f"{engagement['end']}; delayed labels: the answers {labels['start']} .. "
            f"{labels['end']}.</p>",
            "<ul>" + "".join(f"<li>{escape.escape(n)}</li>" for n in document["notes"])
            + "</ul>", "<h2>Delayed labels against the promise</h2>",
            _html_table(verdicts, ["model", "version", "metric", "online", "low", "high",
                                   "promise", "samples", "status"])]
    if any(v["promise"] and v["low"] is not None for v in verdicts):
        with plt.rc_context({"svg.fonttype": "none"}):  # text as text: a tenth the size
            body.append(promise_plot(verdicts))
    for scope, keys, title in (("version", ["model", "version"], "By model version"),
                               ("arm", ["experiment", "arm"], "By experiment arm"),
                               ("source", ["source"], "By candidate source")):
        rows = [f for f in figures if f["scope"] == scope]
        if rows:
            body += [f"<h2>{title}</h2>",
                     _html_table(rows, [*keys, "metric", "value", "samples", "low", "high"])]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Online quality</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def write(document: dict, figures: list[dict], verdicts: list[dict],
          out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    data, page = out / "quality.json", out / "quality.html"
    data.write_text(json.dumps({**document, "verdicts": verdicts, "figures": figures},
                               indent=2) + "\n")
    page.write_text(html(document, figures, verdicts))
    return data, page
