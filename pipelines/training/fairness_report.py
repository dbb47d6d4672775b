"""The fairness gate's HTML report: verdict, per-group tables, bar charts (inline SVG:
the training environment has no plotting library, and one file is easy to keep)."""
from __future__ import annotations

import html as escape

import numpy as np
import pandas as pd

from libs import feature_spec
from pipelines.training import fairness

STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}"
         "table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
         ".small{color:#999}.bad{color:#b00}.good{color:#070}")
COLORS = ("#4c78a8", "#f58518")


def _bars(title: str, labels: list[str], series: dict[str, list[float]]) -> str:
    """A grouped horizontal bar chart: one row per label, one bar per series."""
    width, row, left = 560, 14 * max(len(series), 1) + 8, 110
    top = max((v for values in series.values() for v in values if not np.isnan(v)),
              default=1.0) or 1.0
    height = row * len(labels) + 40
    parts = [f'<svg width="{width}" height="{height}" role="img">',
             f'<text x="0" y="14" font-weight="bold">{escape.escape(title)}</text>']
    for i, label in enumerate(labels):
        y = 24 + i * row
        parts.append(f'<text x="0" y="{y + 11}" font-size="11">{escape.escape(label)}</text>')
        for j, (name, values) in enumerate(series.items()):
            value = values[i]
            if np.isnan(value):
                continue
            length = (width - left - 60) * value / top
            parts.append(f'<rect x="{left}" y="{y + 14 * j}" width="{length:.1f}" '
                         f'height="12" fill="{COLORS[j % len(COLORS)]}"/>'
                         f'<text x="{left + length + 4:.1f}" y="{y + 14 * j + 10}" '
                         f'font-size="10">{value:.3f}</text>')
    legend = " ".join(f'<tspan fill="{COLORS[j % len(COLORS)]}">&#9632; '
                      f'{escape.escape(n)}</tspan>' for j, n in enumerate(series))
    parts.append(f'<text x="{left}" y="{height - 4}" font-size="11">{legend}</text></svg>')
    return "".join(parts)


def _table(table: pd.DataFrame, min_group_size: int) -> str:
    head = "".join(f"<th>{escape.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for group, values in table.iterrows():
        small = values[fairness.SIZE] < min_group_size
        cells = "".join(f"<td>{'' if pd.isna(v) else f'{v:.4g}'}</td>" for v in values)
        rows.append(f'<tr class="{"small" if small else ""}"><th>'
                    f'{escape.escape(str(group))}</th>{cells}</tr>')
    return (f"<table><tr><th>{escape.escape(str(table.index.name))}</th>{head}</tr>"
            + "".join(rows) + "</table>")


def _genre_chart(attribute: str, mixes: dict) -> str:
    """Per group: the top genres' share in recommendations and in training ratings."""
    charts = []
    for group, (shown, rated) in mixes.items():
        top = np.argsort(-(shown + rated))[:6]
        charts.append(_bars(f"{attribute} = {group}: genre mix",
                            [feature_spec.GENRES[i] for i in top],
                            {"recommended": [float(shown[i]) for i in top],
                             "rated in train": [float(rated[i]) for i in top]}))
    return "".join(charts)


def _checks(checks: list) -> str:
    """Every bound checked: the estimate, its interval and the verdict."""
    if not checks:
        return ""
    rows = "".join(
        f"<tr><td>{escape.escape(c.field)}</td><td>{escape.escape(c.attribute)}</td>"
        f"<td>{escape.escape(' vs '.join(c.groups))}</td><td>{c.estimate:.4f}</td>"
        f"<td>{'' if c.low is None else f'{c.low:.4f} to {c.high:.4f}'}</td>"
        f"<td>{c.limit}</td><td class='{'bad' if c.blocks else 'good'}'>"
        f"{'blocks' if c.blocks else 'holds'}</td></tr>" for c in checks)
    return ("<h2>Bounds, with intervals</h2><table><tr><th>bound</th><th>attribute</th>"
            "<th>groups</th><th>estimate</th><th>interval</th><th>limit</th><th></th></tr>"
            f"{rows}</table>")


def html(model_kind: str, tables: dict[str, pd.DataFrame], limits: dict,
         min_group_size: int, reasons: list[str], checks: list = ()) -> str:
    verdict = ("<p class='good'>Blessed: every bound holds.</p>" if not reasons else
               "<p class='bad'>Not blessed:</p><ul>"
               + "".join(f"<li>{escape.escape(r)}</li>" for r in reasons) + "</ul>")
    bounds = "".join(f"<li>{escape.escape(b.field)} = {limits.get(b.field)} "
                     f"({b.kind.replace('_', ' ')} of {b.metric})</li>"
                     for b in fairness.BOUNDS if b.model == model_kind)
    quality = "recall_at_10" if model_kind == "retrieval" else "rmse"
    body = [f"<h1>Fairness of the {model_kind} model</h1>", verdict,
            f"<div>Bounds (pipeline config): <ul>{bounds}</ul>"
            f"Groups with fewer than {min_group_size} users are grey: reported, not "
            "gated. A gap blocks only when its whole interval is past the bound.</div>",
            _checks(list(checks))]
    for attribute, table in tables.items():
        labels = [str(g) for g in table.index]
        series = {quality: table[quality].tolist()}
        if model_kind == "ranking":
            series["item-mean baseline"] = table["baseline_rmse"].tolist()
        body += [f"<h2>By {escape.escape(attribute)}</h2>", _table(table, min_group_size),
                 _bars(f"{quality} by {attribute}", labels, series)]
        if model_kind == "retrieval":
            body += [_bars(f"exposure by {attribute}", labels,
                           {"popularity percentile": table["popularity_percentile"].tolist(),
                            "long-tail share": table["long_tail_share"].tolist()}),
                     "<details><summary>genre mix per group</summary>",
                     _genre_chart(attribute, table.attrs.get("genre_mix", {})),
                     "</details>"]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Fairness: "
            f"{model_kind}</title><style>{STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
