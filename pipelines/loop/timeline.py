"""The loop's timeline, from its audit log: per retraining, when the trigger's report was
written (detection), when the controller reacted, how long retraining took, how long the
pushed versions took to load, how long the canary ran, and what it decided.

  python -m pipelines.loop.controller timeline [--out reports/loop]
writes OUT/timeline.json and OUT/timeline.html (one row per loop, its phases as bars).
"""
from __future__ import annotations

import html as escape
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt

from pipelines.experiments import report

PHASES = (("reaction", "detected", "retrain_started", "#bbbbbb"),
          ("retraining", "retrain_started", "retrained", "#4c78a8"),
          ("loading", "canary_planned", "canary_started", "#f2cf5b"),
          ("canary", "canary_started", "decided", "#72b7b2"))


def loops(steps: list[dict]) -> list[dict]:
    """One entry per retraining the audit log holds, oldest first, with its moments (unix
    seconds; None when it did not happen) and the seconds each phase took."""
    found: list[dict] = []
    for step in steps:
        action = step["action"]
        if action == "retrain":
            triggers = step.get("triggers", [])
            detected = [t.get("detected_at") for t in triggers if t.get("detected_at")]
            found.append({"triggers": triggers, "detected": min(detected, default=None),
                          "retrain_started": step["time"], "retrained": None,
                          "pushed": {}, "refused": {}, "canary_planned": None,
                          "canary_started": None, "decided": None, "outcome": None,
                          "reasons": [], "experiment": None, "figures": {}})
            continue
        if not found:
            continue
        current = found[-1]
        if action == "retrained":
            current.update(retrained=step["time"], pushed=step.get("pushed", {}),
                           refused=step.get("refused", {}),
                           outcome=None if step.get("pushed") else "nothing pushed")
        elif action == "retrain failed":
            current.update(retrained=step["time"], outcome="retraining failed")
        elif action == "canary planned":
            current.update(canary_planned=step["time"], experiment=step.get("experiment"))
        elif action == "canary started":
            current["canary_started"] = step["time"]
        elif action == "canary decided":
            current.update(decided=step["time"], outcome=step.get("outcome"),
                           reasons=step.get("reasons", []), figures=step.get("figures", {}))
    for entry in found:
        entry["seconds"] = {name: entry[end] - entry[start]
                            for name, start, end, _ in PHASES
                            if entry[start] is not None and entry[end] is not None}
        if entry["decided"] is not None and entry["detected"] is not None:
            entry["seconds"]["detection to decision"] = entry["decided"] - entry["detected"]
    return found


def _when(moment: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(moment)) if moment else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def summary(entries: list[dict]) -> list[str]:
    lines = []
    for n, entry in enumerate(entries, 1):
        kinds = ", ".join(t["kind"] for t in entry["triggers"]) or "-"
        phases = "; ".join(f"{name} {_duration(s)}" for name, s in entry["seconds"].items())
        lines.append(f"loop {n} ({kinds}, retrain started {_when(entry['retrain_started'])} "
                     f"UTC): {entry['outcome'] or 'running'}; {phases or 'no phase done'}")
    return lines


def _plot(entries: list[dict]) -> str:
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(entries) + 1.5))
    for row, entry in enumerate(entries):
        origin = entry["detected"] or entry["retrain_started"]
        for name, start, end, colour in PHASES:
            if entry[start] is not None and entry[end] is not None:
                axes.barh(row, entry[end] - entry[start], left=entry[start] - origin,
                          height=0.5, color=colour, label=name if row == 0 else None)
        if entry["decided"] is not None:
            promoted = entry["outcome"] in ("promoted", "passed")
            axes.plot(entry["decided"] - origin, row, "o",
                      color="#54a24b" if promoted else "#e45756")
    axes.set_yticks(range(len(entries)), [f"loop {n}" for n in range(1, len(entries) + 1)])
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the trigger's report was written (o: the decision, "
                    "green promoted, red rolled back)")
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return report.svg(figure)


def html(entries: list[dict]) -> str:
    items = "".join(f"<li>{escape.escape(line)}</li>" for line in summary(entries))
    rows = "".join(
        f"<tr><td>{n}</td><td>{escape.escape('; '.join(t['reason'] for t in e['triggers']))}"
        f"</td><td>{escape.escape(json.dumps(e['pushed']))}</td>"
        f"<td>{escape.escape(e['outcome'] or 'running')}</td>"
        f"<td>{escape.escape('; '.join(e['reasons']))}</td></tr>"
        for n, e in enumerate(entries, 1))
    plot = _plot(entries) if entries else "<p>The loop has not retrained yet.</p>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>The loop's timeline"
            f"</title><style>{report.STYLE}</style></head><body>"
            f"<h1>The loop's timeline</h1><p>{escape.escape(__doc__.split(2 * chr(10))[0])}</p>"
            f"<ul>{items}</ul>{plot}<table><tr><th>loop</th><th>why</th><th>pushed</th>"
            f"<th>decision</th><th>because</th></tr>{rows}</table></body></html>\n")


def write(steps: list[dict], out: Path) -> list[dict]:
    entries = loops(steps)
    out.mkdir(parents=True, exist_ok=True)
    (out / "timeline.json").write_text(json.dumps(entries, indent=2, default=str))
    (out / "timeline.html").write_text(html(entries))
    return entries
