"""Whether a canary may replace the stable version, judged on what users did with the
answers (outcome events through the experiment analysis), not on the model's own scores.

  rollback  a guardrail fails (fallback rate, p99 latency: analysis.guardrails), the
            sample ratio is off (assignment or logging is broken), or the always-valid
            interval of canary minus stable on the metric lies below 0: shown worse
  promote   at the end of the canary, the interval's lower bound is above
            -margin x stable's mean: shown no worse than the margin (non-inferiority)
  continue  otherwise, before the end; at the end, a canary not shown good enough is
            rolled back (the stable version stays; retraining will try again)

The interval is the mixture SPRT's confidence sequence (stats.py), valid however often
one looks, so judging at every step of the ramp does not inflate the error: a canary
worse than the margin is promoted at most `alpha` of the time (simulation.py measures it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.experiments.analysis import Analysis

ACTIONS = ("promote", "rollback", "continue")


@dataclass(frozen=True)
class Rules:
    metric: str = "conversion"  # per user: engaged at least once (analysis.METRICS)
    margin: float = 0.1  # how much worse than stable, relative, still counts as as good
    canary: str = "canary"
    stable: str = "stable"


@dataclass
class Decision:
    action: str
    reasons: list[str]
    figures: dict = field(default_factory=dict)  # difference, interval, means, users


def decide(analysis: Analysis, rules: Rules, final: bool) -> Decision:
    """The decision after the looks `analysis` holds; `final`: the canary's time is up."""
    figures = {"users": analysis.users}
    if analysis.verdict.blocked:
        return Decision("rollback", [f"sample ratio mismatch (p = {analysis.srm.p_value:.2g}): "
                                     "assignment or logging is broken"], figures)
    failures = next(r.failures for r in analysis.guardrails if r.arm == rules.canary)
    if failures:
        return Decision("rollback", [f"guardrail: {f}" for f in failures], figures)
    path = analysis.paths[rules.metric][rules.canary]
    result = analysis.results[rules.canary][rules.metric]
    if not path.p_values:  # no look had enough users in both arms yet
        return Decision("rollback" if final else "continue",
                        ["too few users in an arm to judge"], figures)
    low, high = path.lows[-1], path.highs[-1]
    floor = -rules.margin * result["control_mean"]
    figures.update({"stable_mean": result["control_mean"],
                    "canary_mean": result["treatment_mean"],
                    "difference": result["difference"], "low": low, "high": high,
                    "floor": floor})
    shown = (f"{rules.metric} {result['treatment_mean']:.4g} vs stable "
             f"{result['control_mean']:.4g}, always-valid interval of the difference "
             f"[{low:.4g}, {high:.4g}]")
    if high < 0:
        return Decision("rollback", [f"worse than stable: {shown}"], figures)
    if not final:
        return Decision("continue", [shown], figures)
    if low > floor:
        return Decision("promote", [f"no worse than stable by more than "
                                    f"{rules.margin:.0%}: {shown}"], figures)
    return Decision("rollback", [f"not shown within {rules.margin:.0%} of stable: {shown}"],
                    figures)
