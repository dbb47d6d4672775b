"""One experiment's analysis: per-arm metrics against control, the sample ratio check,
guardrails, CUPED, always-valid sequential results over time, and the verdict.

The unit of randomization and of analysis is the user. Per user:
  conversion         1 if at least one outcome was attributed to the user's exposures
  outcomes_per_user  the number of attributed outcomes
  mean_value         the mean value (rating, or 1 for a click) of those outcomes, among
                     users with at least one: conditional on converting, so read it next
                     to conversion, not instead of it
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipelines.experiments import stats
from pipelines.experiments.exposures import InputError, Joined

METRICS = ("conversion", "outcomes_per_user", "mean_value")
SEQUENTIAL_METRICS = ("conversion", "outcomes_per_user")  # defined for every user


@dataclass
class Settings:
    alpha: float = 0.05
    control: str = ""  # default: the experiment's first arm
    metric: str = "conversion"  # the one the verdict is decided on
    decision: str = "fixed"  # or "sequential": decide on the always-valid p-value
    srm_threshold: float = 0.001  # SRM p below this blocks the verdict
    tau: float = 0.1  # mSPRT mixture sd, in per-user standard deviations of the metric
    looks: int = 20  # points in time the sequential results are computed at
    min_users_per_arm: int = 20  # no sequential look before each arm has this many
    fallback_margin: float = 0.01  # absolute: arm's fallback rate - control's
    latency_margin: float = 0.10  # relative: arm's p99 / control's p99 - 1

    def validate(self) -> None:
        if not 0 < self.alpha < 1:
            raise InputError(f"alpha must be between 0 and 1, got {self.alpha}")
        if self.metric not in METRICS:
            raise InputError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.decision not in ("fixed", "sequential"):
            raise InputError(f"decision must be fixed or sequential, got {self.decision!r}")
        if self.decision == "sequential" and self.metric not in SEQUENTIAL_METRICS:
            raise InputError(f"sequential decisions need a per-user metric "
                             f"({', '.join(SEQUENTIAL_METRICS)}), got {self.metric!r}")
        if self.looks < 1:
            raise InputError(f"looks must be at least 1, got {self.looks}")


@dataclass
class Users:
    """Per-user arrays, one entry per analysed user, plus what attribution needs."""
    ids: np.ndarray
    arms: np.ndarray
    first_seen: np.ndarray
    outcome_user: np.ndarray  # per attributed outcome: index into ids
    outcome_time: np.ndarray
    outcome_value: np.ndarray
    in_two_arms: int
    allowlisted: int

    def at(self, moment: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(included, outcome counts, value sums) with what was known at `moment`."""
        upto = self.outcome_time <= moment
        n = len(self.ids)
        counts = np.bincount(self.outcome_user[upto], minlength=n)
        sums = np.bincount(self.outcome_user[upto], weights=self.outcome_value[upto],
                           minlength=n)
        return self.first_seen <= moment, counts, sums


def experiment_users(exposures: pd.DataFrame, joined: Joined, key: str,
                     allowlist: set[str] = frozenset()) -> tuple[Users, pd.DataFrame]:
    """The experiment's users and its exposures (rows of users analysed)."""
    arm = exposures.assignments.map(lambda a: a.get(key))
    exposed = exposures[arm.notna()].assign(arm=arm[arm.notna()])
    if exposed.empty:
        seen = sorted({k for a in exposures.assignments for k in a})
        raise InputError(f"experiment {key!r} is not in the exposure log "
                         f"(experiments there: {', '.join(seen) or 'none'})")
    pairs = exposed[["user_id", "arm"]].drop_duplicates()
    twice = set(pairs.user_id[pairs.user_id.duplicated()])  # re-bucketed mid-experiment
    qa = set(exposed.user_id) & set(allowlist)  # sent to an arm by hand, not by hash
    exposed = exposed[~exposed.user_id.isin(twice | qa)]
    first = exposed.groupby("user_id").agg(arm=("arm", "first"),
                                           first_seen=("timestamp", "min"))
    ids = first.index.to_numpy()
    code = pd.Series(np.arange(len(ids)), index=first.index)
    outcomes = joined.outcomes
    owner = pd.Series(exposed.user_id.to_numpy(), index=exposed.request_id.to_numpy())
    # an outcome counts when its exposure is one of this experiment's analysed users'
    mine = outcomes[outcomes.request_id.isin(owner.index)]
    users = Users(ids=ids, arms=first.arm.to_numpy(), first_seen=first.first_seen.to_numpy(),
                  outcome_user=code[owner[mine.request_id].to_numpy()].to_numpy(),
                  outcome_time=mine.timestamp.to_numpy(float),
                  outcome_value=mine.value.to_numpy(float),
                  in_two_arms=len(twice), allowlisted=len(qa))
    return users, exposed


def per_user_metrics(users: Users, moment: float = math.inf) -> dict[str, np.ndarray]:
    included, counts, sums = users.at(moment)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_value = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return {"included": included, "conversion": (counts > 0).astype(float),
            "outcomes_per_user": counts.astype(float), "mean_value": mean_value}


def compare(metric: str, control: np.ndarray, treatment: np.ndarray,
            alpha: float) -> stats.Comparison:
    if metric == "conversion":
        return stats.two_proportions(control, treatment, alpha)
    if metric == "mean_value":
        control, treatment = control[~np.isnan(control)], treatment[~np.isnan(treatment)]
    return stats.welch(control, treatment, alpha)


@dataclass
class Guardrail:
    arm: str
    fallback_rate: float
    p99_latency_ms: float
    failures: list[str] = field(default_factory=list)


def guardrails(exposed: pd.DataFrame, arms: list[str], control: str,
               settings: Settings) -> list[Guardrail]:
    rows = {arm: Guardrail(arm, float(group.fallback.mean()),
                           float(np.percentile(group.latency_ms, 99)))
            for arm, group in exposed.groupby("arm")}
    base = rows[control]
    for arm in arms:
        row = rows[arm]
        if arm == control:
            continue
        if row.fallback_rate - base.fallback_rate > settings.fallback_margin:
            row.failures.append(f"fallback rate {row.fallback_rate:.2%} vs control "
                                f"{base.fallback_rate:.2%} (margin "
                                f"{settings.fallback_margin:.2%})")
        if row.p99_latency_ms > base.p99_latency_ms * (1 + settings.latency_margin):
            row.failures.append(f"p99 latency {row.p99_latency_ms:.1f} ms vs control "
                                f"{base.p99_latency_ms:.1f} ms (margin "
                                f"{settings.latency_margin:.0%})")
    return [rows[arm] for arm in arms]


@dataclass
class Look:
    time: float
    users: dict[str, int]
    fixed_p: dict  # metric -> arm -> naive fixed-horizon p at this look
    fixed_ci: dict  # metric -> arm -> [low, high]
    sequential: dict  # metric -> arm -> stats.Sequential (before the running min)


def look_times(users: Users, looks: int) -> np.ndarray:
    """`looks` equally spaced times from the first exposure to the last event; the last
    look sees all the data, so it agrees with the fixed-horizon analysis."""
    end = max(users.first_seen.max(),
              users.outcome_time.max() if len(users.outcome_time) else -math.inf)
    return np.linspace(users.first_seen.min(), end, looks + 1)[1:]


def timeline(users: Users, arms: list[str], control: str,
             settings: Settings) -> tuple[list[Look], dict]:
    """Interim looks, and per metric and arm the always-valid path over them."""
    looks = []
    for moment in look_times(users, settings.looks):
        values = per_user_metrics(users, moment)
        included = values["included"]
        groups = {arm: included & (users.arms == arm) for arm in arms}
        counts = {arm: int(g.sum()) for arm, g in groups.items()}
        fixed_p, fixed_ci, sequential = {}, {}, {}
        ready = min(counts.values()) >= settings.min_users_per_arm
        for metric in SEQUENTIAL_METRICS:
            fixed_p[metric], fixed_ci[metric], sequential[metric] = {}, {}, {}
            if not ready:
                continue
            column = values[metric]
            base = column[groups[control]]
            for arm in arms:
                if arm == control:
                    continue
                other = column[groups[arm]]
                result = compare(metric, base, other, settings.alpha)
                fixed_p[metric][arm], fixed_ci[metric][arm] = result.p_value, [result.low,
                                                                               result.high]
                difference, variance = stats.difference_and_variance(base, other)
                spread = math.sqrt(np.var(np.concatenate([base, other]), ddof=1))
                sequential[metric][arm] = stats.msprt_look(
                    difference, variance, settings.tau * spread, settings.alpha)
        looks.append(Look(float(moment), counts, fixed_p, fixed_ci, sequential))
    paths = {metric: {arm: stats.msprt_path([look.sequential[metric][arm] for look in looks
                                             if arm in look.sequential[metric]])
                      for arm in arms if arm != control}
             for metric in SEQUENTIAL_METRICS}
    return looks, paths


@dataclass
class Verdict:
    blocked: bool
    winner: str | None
    lines: list[str]


def decide(results: dict, paths: dict, srm: stats.SampleRatio, rails: list[Guardrail],
           control: str, settings: Settings) -> Verdict:
    """Blocked on a sample ratio mismatch; else each arm is better, worse or not
    distinguishable from control on the chosen metric, at alpha / (number of arms - 1)
    (Bonferroni: several arms are several chances of a false win)."""
    if srm.p_value < settings.srm_threshold:
        return Verdict(True, None, [
            f"BLOCKED: sample ratio mismatch (chi-square p = {srm.p_value:.2g} < "
            f"{settings.srm_threshold}): users per arm {srm.observed} do not match the "
            "configured weights, so assignment or logging is broken and no comparison "
            "can be trusted. No winner."])
    failures = {rail.arm: rail.failures for rail in rails}
    level = settings.alpha / max(len(results), 1)
    lines, winners = [], []
    for arm, metrics in results.items():
        result = metrics[settings.metric]
        if settings.decision == "sequential":
            p_value = paths[settings.metric][arm].p_values[-1]
            basis = "always-valid p"
        else:
            p_value, basis = result["p_value"], "p"
        if p_value >= level:
            word = "no detectable difference from"
        else:
            word = "better than" if result["difference"] > 0 else "worse than"
        line = (f"{arm}: {word} {control} on {settings.metric} "
                f"({result['difference']:+.4g}, {basis} = {p_value:.3g}, "
                f"level {level:.3g})")
        if failures[arm]:
            line += "; guardrail failed: " + "; ".join(failures[arm])
        elif word == "better than":
            winners.append((result["difference"], arm))
        lines.append(line)
    winner = max(winners)[1] if winners else None
    lines.append(f"winner: {winner}" if winner else "no winner")
    return Verdict(False, winner, lines)


@dataclass
class Analysis:
    experiment: str
    control: str
    arms: list[str]
    settings: Settings
    users: dict[str, int]
    results: dict  # arm -> metric -> comparison fields (treatment arms only)
    cuped: dict  # metric -> {variance_reduction, theta, results: arm -> fields}
    srm: stats.SampleRatio
    guardrails: list[Guardrail]
    looks: list[Look]
    paths: dict
    verdict: Verdict
    attribution: dict

    def to_dict(self) -> dict:
        def clean(value):
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {str(k): clean(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            if dataclasses.is_dataclass(value):
                return clean(dataclasses.asdict(value))
            if isinstance(value, np.generic):
                return clean(value.item())
            return value
        out = {name: getattr(self, name) for name in
               ("experiment", "control", "arms", "users", "results", "cuped", "attribution")}
        out["settings"] = dataclasses.asdict(self.settings)
        out["srm"] = dataclasses.asdict(self.srm)
        out["guardrails"] = [dataclasses.asdict(g) for g in self.guardrails]
        out["sequential"] = {
            metric: {arm: {"time": [look.time for look in self.looks
                                    if arm in look.sequential[metric]],
                           "always_valid_p": path.p_values,
                           "confidence_sequence": [path.lows, path.highs]}
                     for arm, path in arms.items()}
            for metric, arms in self.paths.items()}
        out["looks"] = [{"time": look.time, "users": look.users, "fixed_p": look.fixed_p}
                        for look in self.looks]
        out["verdict"] = dataclasses.asdict(self.verdict)
        return clean(out)


def _fields(result: stats.Comparison) -> dict:
    return {**dataclasses.asdict(result), "relative": result.relative}


def analyze(exposures: pd.DataFrame, joined: Joined, key: str, weights: dict[str, float],
            settings: Settings, pre_period: pd.DataFrame | None = None,
            allowlist: set[str] = frozenset()) -> Analysis:
    """`weights`: arm -> configured weight, in the config's arm order."""
    settings.validate()
    arms = list(weights)
    control = settings.control or arms[0]
    if control not in weights:
        raise InputError(f"control arm {control!r} is not an arm of experiment {key!r} "
                         f"(arms: {', '.join(arms)})")
    users, exposed = experiment_users(exposures, joined, key, allowlist)
    unknown = sorted(set(users.arms) - set(arms))
    if unknown:
        raise InputError(f"experiment {key!r}: the exposure log has arms {unknown} that "
                         f"the config does not (arms: {', '.join(arms)})")
    counts = {arm: int((users.arms == arm).sum()) for arm in arms}
    for arm, n in counts.items():
        if n == 0:
            raise InputError(f"experiment {key!r}: no users in arm {arm!r} in the "
                             "exposure log")
    treatments = [arm for arm in arms if arm != control]
    values = per_user_metrics(users)
    groups = {arm: users.arms == arm for arm in arms}
    results = {arm: {metric: _fields(compare(metric, values[metric][groups[control]],
                                             values[metric][groups[arm]], settings.alpha))
                     for metric in METRICS}
               for arm in treatments}

    adjusted = {}
    if pre_period is not None:
        before = pre_period.groupby("user_id").size()
        covariate = pd.Series(users.ids).map(before).fillna(0).to_numpy(float)
        for metric in SEQUENTIAL_METRICS:
            fit = stats.cuped(values[metric], covariate)
            adjusted[metric] = {
                "variance_reduction": fit.variance_reduction, "theta": fit.theta,
                "results": {arm: _fields(stats.welch(fit.values[groups[control]],
                                                     fit.values[groups[arm]],
                                                     settings.alpha))
                            for arm in treatments}}
            for arm in treatments:
                # the verdict reads the adjusted test: same expected difference, less noise
                results[arm][metric + "_raw"] = results[arm][metric]
                results[arm][metric] = adjusted[metric]["results"][arm]

    srm = stats.sample_ratio(counts, weights)
    rails = guardrails(exposed, arms, control, settings)
    looks, paths = timeline(users, arms, control, settings)
    verdict = decide(results, paths, srm, rails, control, settings)
    attribution = {"by_request_id": joined.by_request_id, "by_window": joined.by_window,
                   "unjoined": joined.unjoined, "users_in_two_arms": users.in_two_arms,
                   "allowlisted_users": users.allowlisted,
                   "outcomes_of_this_experiment": len(users.outcome_time)}
    return Analysis(key, control, arms, settings, counts, results, adjusted, srm, rails,
                    looks, paths, verdict, attribution)
