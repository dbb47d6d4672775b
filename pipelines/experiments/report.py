"""The experiment report: verdict first, then per-arm tables, plots (inline SVG, so the
report is one self-contained file) and the checks behind the verdict."""
from __future__ import annotations

import html as escape
import io
import math
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from pipelines.experiments.analysis import METRICS, Analysis  # noqa: E402

STYLE = ("body{font-family:sans-serif;max-width:64em;margin:2em auto}"
         "table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
         ".bad{color:#b00}.good{color:#070}"
         ".blocked{background:#fdd;border:3px solid #b00;padding:1em;font-size:1.3em}")


def svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def differences_plot(analysis: Analysis) -> str:
    """Treatment minus control per metric, with its confidence interval."""
    figure, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 2.6))
    for ax, metric in zip(axes, METRICS):
        arms = list(analysis.results)
        for i, arm in enumerate(arms):
            result = analysis.results[arm][metric]
            ax.errorbar([result["difference"]], [i],
                        xerr=[[result["difference"] - result["low"]],
                              [result["high"] - result["difference"]]],
                        fmt="o", capsize=4)
        ax.axvline(0, color="#999", linewidth=1)
        ax.set_yticks(range(len(arms)), arms)
        ax.set_title(f"{metric}: arm - {analysis.control}", fontsize=10)
        ax.set_ylim(-0.7, len(arms) - 0.3)
    figure.tight_layout()
    return svg(figure)


def sequential_plot(analysis: Analysis, metric: str) -> str:
    """Always-valid p-value and confidence sequence against the naive fixed-horizon
    p-value and interval, at every look: why looking early needs the former."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2))
    for arm, path in analysis.paths[metric].items():
        looks = [look for look in analysis.looks if arm in look.sequential[metric]]
        times = [_when(look.time) for look in looks]
        naive = [look.fixed_p[metric][arm] for look in looks]
        left.plot(times, path.p_values, label=f"{arm}: always-valid p")
        left.plot(times, naive, linestyle="--", label=f"{arm}: fixed-horizon p (naive)")
        right.fill_between(times, [max(v, -1e9) for v in path.lows],
                           [min(v, 1e9) for v in path.highs], alpha=0.25,
                           label=f"{arm}: confidence sequence")
        right.plot(times, [look.fixed_ci[metric][arm][0] for look in looks], "k:",
                   linewidth=1, label="fixed-horizon CI (naive)")
        right.plot(times, [look.fixed_ci[metric][arm][1] for look in looks], "k:",
                   linewidth=1)
        right.plot(times, [look.sequential[metric][arm].difference for look in looks],
                   label=f"{arm}: difference")
    left.axhline(analysis.settings.alpha, color="#b00", linewidth=1, label="alpha")
    left.set_yscale("log")
    left.set_title(f"{metric}: p-values over time", fontsize=10)
    right.axhline(0, color="#999", linewidth=1)
    right.set_title(f"{metric}: difference vs {analysis.control} over time", fontsize=10)
    finite = [v for path in analysis.paths[metric].values() for v in path.lows + path.highs
              if math.isfinite(v)]
    if finite:
        span = max(abs(v) for v in finite)
        right.set_ylim(-1.2 * span, 1.2 * span)
    for ax in (left, right):
        ax.legend(fontsize=7)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    figure.tight_layout()
    return svg(figure)


def srm_plot(analysis: Analysis) -> str:
    figure, ax = plt.subplots(figsize=(5, 2.4))
    arms = list(analysis.srm.observed)
    x = range(len(arms))
    ax.bar([i - 0.2 for i in x], [analysis.srm.observed[a] for a in arms], 0.4,
           label="observed users")
    ax.bar([i + 0.2 for i in x], [analysis.srm.expected[a] for a in arms], 0.4,
           label="expected from weights")
    ax.set_xticks(list(x), arms)
    ax.set_title(f"sample ratio: chi-square p = {analysis.srm.p_value:.3g}", fontsize=10)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return svg(figure)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"<td>{value:.4g}</td>" if math.isfinite(value) else "<td></td>"
    return f"<td>{escape.escape(str(value))}</td>"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{escape.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def results_table(analysis: Analysis) -> str:
    rows = []
    for arm, metrics in analysis.results.items():
        for metric, r in metrics.items():
            rows.append([arm, metric, r["control_mean"], r["treatment_mean"],
                         r["difference"], r["relative"], r["low"], r["high"], r["p_value"]])
    return _table(["arm", "metric", analysis.control, "arm mean", "difference", "relative",
                   "CI low", "CI high", "p"], rows)


def verdict_table(analysis: Analysis) -> str:
    """The short table the CLI prints."""
    metric = analysis.settings.metric
    lines = [f"{'arm':<20} {'users':>8} {metric:>12} {'diff':>10} {'p':>9} {'seq p':>9}"]
    for arm in analysis.arms:
        n = analysis.users[arm]
        if arm == analysis.control:
            any_result = next(iter(analysis.results.values()), {}).get(metric)
            mean = any_result["control_mean"] if any_result else math.nan
            lines.append(f"{arm + ' (control)':<20} {n:>8} {mean:>12.4g}")
            continue
        r = analysis.results[arm][metric]
        path = analysis.paths.get(metric, {}).get(arm)
        seq = f"{path.p_values[-1]:>9.3g}" if path and path.p_values else f"{'':>9}"
        lines.append(f"{arm:<20} {n:>8} {r['treatment_mean']:>12.4g} "
                     f"{r['difference']:>+10.4g} {r['p_value']:>9.3g} {seq}")
    return "\n".join(lines + analysis.verdict.lines)


def html(analysis: Analysis) -> str:
    verdict = analysis.verdict
    if verdict.blocked:
        head = f"<div class='blocked'>{escape.escape(verdict.lines[0])}</div>"
    else:
        head = ("<ul>" + "".join(f"<li>{escape.escape(line)}</li>" for line in verdict.lines)
                + "</ul>")
    settings = analysis.settings
    body = [f"<h1>Experiment {escape.escape(analysis.experiment)}</h1>", head,
            f"<p>Control: {escape.escape(analysis.control)}. Decided on "
            f"{settings.metric} with the {settings.decision}-horizon test at alpha "
            f"{settings.alpha} (Bonferroni over the treatment arms). Users: "
            + ", ".join(f"{escape.escape(a)} {n}" for a, n in analysis.users.items())
            + ".</p>",
            "<h2>Per-arm metrics</h2>", results_table(analysis), differences_plot(analysis)]
    if analysis.cuped:
        body.append("<h2>CUPED</h2><p>Covariate: each user's pre-period outcome count. "
                    "The tables above use the adjusted values; the raw ones end in _raw.</p>")
        body.append(_table(["metric", "theta", "variance reduction"],
                           [[m, c["theta"], c["variance_reduction"]]
                            for m, c in analysis.cuped.items()]))
    body += ["<h2>Sample ratio</h2>",
             "<p>Users per arm against the configured weights; p below "
             f"{settings.srm_threshold} blocks the verdict.</p>", srm_plot(analysis),
             "<h2>Guardrails</h2>",
             _table(["arm", "fallback rate", "p99 latency ms", "failures"],
                    [[g.arm, g.fallback_rate, g.p99_latency_ms, "; ".join(g.failures)]
                     for g in analysis.guardrails])]
    body.append(f"<h2>Over time (always-valid, mSPRT, tau = {settings.tau} sd)</h2>"
                "<p>The always-valid p-value and confidence sequence may be read at any "
                "time, as often as wanted; the dashed fixed-horizon p-value is valid only "
                "once, at the planned end.</p>")
    for metric in analysis.paths:
        if any(path.p_values for path in analysis.paths[metric].values()):
            body.append(sequential_plot(analysis, metric))
    attribution = analysis.attribution
    body.append("<h2>Attribution</h2>" + _table(list(attribution),
                                                [list(attribution.values())]))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Experiment "
            f"{escape.escape(analysis.experiment)}</title><style>{STYLE}</style></head>"
            "<body>" + "\n".join(body) + "</body></html>\n")
