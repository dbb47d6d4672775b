"""The statistics of an A/B test, on per-user values (NumPy and SciPy only).

  two_proportions   difference of two conversion rates: z-test (pooled standard error
                    under the null), Wald interval (unpooled)
  welch             difference of two means with unequal variances: Welch's t-test and
                    interval (Welch-Satterthwaite degrees of freedom)
  sample_ratio      chi-square of users per arm against the configured weights (SRM)
  msprt             mixture sequential probability ratio test (Johari, Pekelis and Walsh,
                    "Always valid inference", 2017), normal mixture: an always-valid
                    p-value and confidence sequence one may look at any number of times
  cuped             regression adjustment on a pre-period covariate (Deng et al., 2013)
  binomial_interval Clopper-Pearson interval of a proportion (for simulated error rates)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Comparison:
    """Treatment minus control for one metric."""
    control_mean: float
    treatment_mean: float
    difference: float
    low: float  # confidence interval of the difference
    high: float
    p_value: float

    @property
    def relative(self) -> float:
        return self.difference / self.control_mean if self.control_mean else math.nan


def two_proportions(control: np.ndarray, treatment: np.ndarray,
                    alpha: float = 0.05) -> Comparison:
    """Inputs are 0/1 per user."""
    n_c, n_t = len(control), len(treatment)
    p_c, p_t = float(np.mean(control)), float(np.mean(treatment))
    difference = p_t - p_c
    pooled = (p_c * n_c + p_t * n_t) / (n_c + n_t)
    null_se = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
    p_value = 2 * stats.norm.sf(abs(difference) / null_se) if null_se > 0 else 1.0
    se = math.sqrt(p_c * (1 - p_c) / n_c + p_t * (1 - p_t) / n_t)
    z = stats.norm.ppf(1 - alpha / 2)
    return Comparison(p_c, p_t, difference, difference - z * se, difference + z * se,
                      float(p_value))


def welch(control: np.ndarray, treatment: np.ndarray, alpha: float = 0.05) -> Comparison:
    n_c, n_t = len(control), len(treatment)
    m_c, m_t = float(np.mean(control)), float(np.mean(treatment))
    v_c = float(np.var(control, ddof=1)) / n_c if n_c > 1 else math.nan
    v_t = float(np.var(treatment, ddof=1)) / n_t if n_t > 1 else math.nan
    difference, se = m_t - m_c, math.sqrt(v_c + v_t)
    if not se > 0:  # constant values (or too few users): no evidence either way
        return Comparison(m_c, m_t, difference, difference, difference,
                          1.0 if difference == 0 or math.isnan(se) else 0.0)
    df = (v_c + v_t) ** 2 / (v_c ** 2 / (n_c - 1) + v_t ** 2 / (n_t - 1))
    t = stats.t.ppf(1 - alpha / 2, df)
    p_value = 2 * stats.t.sf(abs(difference) / se, df)
    return Comparison(m_c, m_t, difference, difference - t * se, difference + t * se,
                      float(p_value))


@dataclass(frozen=True)
class SampleRatio:
    observed: dict[str, int]
    expected: dict[str, float]
    chi_square: float
    p_value: float


def sample_ratio(counts: dict[str, int], weights: dict[str, float]) -> SampleRatio:
    """Users per arm against the share each arm's weight promises."""
    total_weight = sum(weights.values())
    total = sum(counts.values())
    expected = {arm: total * w / total_weight for arm, w in weights.items()}
    observed = {arm: int(counts.get(arm, 0)) for arm in weights}
    chi_square = sum((observed[a] - expected[a]) ** 2 / expected[a] for a in weights)
    p_value = float(stats.chi2.sf(chi_square, len(weights) - 1)) if len(weights) > 1 else 1.0
    return SampleRatio(observed, expected, float(chi_square), p_value)


@dataclass(frozen=True)
class Sequential:
    """One look of the mixture SPRT; p_value and the interval are always valid only as
    the running minimum / intersection over looks, which `msprt_path` takes."""
    difference: float
    variance: float  # of the difference
    likelihood_ratio: float
    low: float
    high: float


def msprt_look(difference: float, variance: float, tau: float, alpha: float) -> Sequential:
    """The normal-mixture likelihood ratio of "difference = 0" against a N(0, tau^2)
    mixture of alternatives, and the set of differences it does not reject at alpha.

    With V the variance of the estimated difference d:
        Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))
    and theta is rejected when Lambda(d - theta) >= 1 / alpha, which gives the interval
        d -+ sqrt(V (V + tau^2) / tau^2 * (2 log(1 / alpha) + log((V + tau^2) / V))).
    """
    if not variance > 0 or not tau > 0:
        return Sequential(difference, variance, 1.0, -math.inf, math.inf)
    total = variance + tau ** 2
    log_ratio = (0.5 * math.log(variance / total)
                 + tau ** 2 * difference ** 2 / (2 * variance * total))
    half = math.sqrt(variance * total / tau ** 2
                     * (2 * math.log(1 / alpha) + math.log(total / variance)))
    return Sequential(difference, variance, math.exp(min(log_ratio, 700.0)),
                      difference - half, difference + half)


@dataclass(frozen=True)
class SequentialPath:
    """Always-valid p-values and confidence sequence, one entry per look."""
    p_values: list[float]
    lows: list[float]
    highs: list[float]


def msprt_path(looks: list[Sequential]) -> SequentialPath:
    """p_n = min(p_{n-1}, 1 / Lambda_n); the interval is the running intersection. Both
    stay valid however many times, and whenever, one looks (Johari et al., section 3)."""
    p_values, lows, highs = [], [], []
    p, low, high = 1.0, -math.inf, math.inf
    for look in looks:
        p = min(p, 1.0 / look.likelihood_ratio)
        low, high = max(low, look.low), min(high, look.high)
        p_values.append(p)
        lows.append(low)
        highs.append(high)
    return SequentialPath(p_values, lows, highs)


def difference_and_variance(control: np.ndarray, treatment: np.ndarray
                            ) -> tuple[float, float]:
    """Difference of means and its (unpooled) variance, the mSPRT's inputs."""
    n_c, n_t = len(control), len(treatment)
    if n_c < 2 or n_t < 2:
        return math.nan, math.nan
    return (float(np.mean(treatment) - np.mean(control)),
            float(np.var(control, ddof=1) / n_c + np.var(treatment, ddof=1) / n_t))


@dataclass(frozen=True)
class Adjusted:
    values: np.ndarray  # per user, in the order given
    theta: float
    variance_reduction: float  # 1 - var(adjusted) / var(raw)


def cuped(values: np.ndarray, covariate: np.ndarray) -> Adjusted:
    """Y - theta (X - mean X), theta = cov(X, Y) / var(X), pooled over every arm: the
    adjustment leaves each arm's expected mean unchanged (X is measured before
    assignment) and removes the variance X explains."""
    values, covariate = np.asarray(values, float), np.asarray(covariate, float)
    var_x = float(np.var(covariate, ddof=1)) if len(covariate) > 1 else 0.0
    if var_x == 0:
        return Adjusted(values, 0.0, 0.0)
    theta = float(np.cov(covariate, values, ddof=1)[0, 1] / var_x)
    adjusted = values - theta * (covariate - covariate.mean())
    var_y = float(np.var(values, ddof=1))
    reduction = 1 - float(np.var(adjusted, ddof=1)) / var_y if var_y > 0 else 0.0
    return Adjusted(adjusted, theta, reduction)


def binomial_interval(successes: int, trials: int, confidence: float = 0.95
                      ) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval of a proportion."""
    tail = (1 - confidence) / 2
    low = stats.beta.ppf(tail, successes, trials - successes + 1) if successes else 0.0
    high = (stats.beta.ppf(1 - tail, successes + 1, trials - successes)
            if successes < trials else 1.0)
    return float(low), float(high)
