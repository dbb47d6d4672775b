import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from pipelines.experiments import stats


def test_two_proportions_matches_the_textbook_z_test():
    control = np.r_[np.ones(50), np.zeros(50)]
    treatment = np.r_[np.ones(60), np.zeros(40)]
    result = stats.two_proportions(control, treatment)
    pooled = 0.55
    z = 0.1 / math.sqrt(pooled * (1 - pooled) * 2 / 100)
    assert result.difference == pytest.approx(0.1)
    assert result.p_value == pytest.approx(2 * scipy_stats.norm.sf(z))
    assert result.low < 0 < result.high  # p 0.15: the interval holds zero
    assert result.relative == pytest.approx(0.2)


def test_welch_agrees_with_scipy_and_its_interval_matches_its_p_value():
    rng = np.random.default_rng(0)
    control, treatment = rng.normal(0, 1, 80), rng.normal(0.5, 3, 120)
    result = stats.welch(control, treatment, alpha=0.05)
    assert result.p_value == pytest.approx(
        scipy_stats.ttest_ind(treatment, control, equal_var=False).pvalue)
    # the 1 - p interval just touches zero
    edge = stats.welch(control, treatment, alpha=result.p_value)
    assert min(abs(edge.low), abs(edge.high)) == pytest.approx(0, abs=1e-9)


def test_sample_ratio_against_configured_weights():
    assert stats.sample_ratio({"a": 500, "b": 500}, {"a": 1, "b": 1}).p_value == 1.0
    lost = stats.sample_ratio({"a": 1000, "b": 900}, {"a": 50, "b": 50})
    assert lost.chi_square == pytest.approx(2 * 50 ** 2 / 950)
    assert lost.p_value == pytest.approx(0.0218, abs=1e-3)
    # 90/10 weights: 900/100 is exactly right, 500/500 is a glaring mismatch
    assert stats.sample_ratio({"a": 900, "b": 100}, {"a": 90, "b": 10}).p_value == 1.0
    assert stats.sample_ratio({"a": 500, "b": 500}, {"a": 90, "b": 10}).p_value < 1e-100


def test_msprt_interval_edge_is_where_the_likelihood_ratio_reaches_one_over_alpha():
    look = stats.msprt_look(difference=0.3, variance=0.01, tau=0.2, alpha=0.05)
    for edge in (look.low, look.high):
        shifted = stats.msprt_look(0.3 - edge, 0.01, 0.2, 0.05)
        assert shifted.likelihood_ratio == pytest.approx(20.0)
    assert stats.msprt_look(0.0, 0.01, 0.2, 0.05).likelihood_ratio < 1


def _streams(effect: float, streams: int = 400, looks: int = 50, per_look: int = 20,
             seed: int = 1):
    """Per stream and look: (difference, its variance) with data accumulated so far."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, (streams, looks * per_look))
    b = rng.normal(effect, 1, (streams, looks * per_look))
    for stream in range(streams):
        yield [stats.difference_and_variance(a[stream, :n], b[stream, :n])
               for n in range(per_look, looks * per_look + 1, per_look)]


def test_always_valid_p_holds_alpha_under_continuous_peeking_where_naive_fails():
    naive = sequential = covered = 0
    for looks in _streams(effect=0.0):
        ps = [2 * scipy_stats.norm.sf(abs(d) / math.sqrt(v)) for d, v in looks]
        naive += min(ps) < 0.05
        path = stats.msprt_path([stats.msprt_look(d, v, 0.1, 0.05) for d, v in looks])
        sequential += path.p_values[-1] < 0.05
        covered += all(lo <= 0 <= hi for lo, hi in zip(path.lows, path.highs))
    assert naive / 400 > 0.15  # 50 looks at a fixed-horizon test: a false win in ~30%
    assert sequential / 400 <= 0.05
    assert covered / 400 >= 0.95  # the confidence sequence covers the truth at every look


def test_always_valid_p_detects_a_real_effect_and_never_rises():
    detected = 0
    for looks in _streams(effect=0.2, streams=50):
        path = stats.msprt_path([stats.msprt_look(d, v, 0.1, 0.05) for d, v in looks])
        assert all(b <= a for a, b in zip(path.p_values, path.p_values[1:]))
        detected += path.p_values[-1] < 0.05
    assert detected >= 45  # 1000 users per arm, effect 0.2 sd


def test_cuped_removes_the_variance_the_covariate_explains_without_moving_the_effect():
    rng = np.random.default_rng(3)
    pre = rng.poisson(3, 20_000).astype(float)
    arm = rng.random(20_000) < 0.5
    outcome = 0.8 * pre + rng.normal(0, 1, 20_000) + 0.1 * arm
    fit = stats.cuped(outcome, pre)
    rho = np.corrcoef(pre, outcome)[0, 1]
    assert fit.variance_reduction == pytest.approx(rho ** 2, abs=0.01)
    assert fit.theta == pytest.approx(0.8, abs=0.02)
    effect = fit.values[arm].mean() - fit.values[~arm].mean()
    assert effect == pytest.approx(0.1, abs=0.04)
    noise = stats.cuped(outcome, rng.normal(size=20_000))
    assert noise.variance_reduction < 0.001


def test_binomial_interval_is_clopper_pearson():
    low, high = stats.binomial_interval(5, 100)
    assert (low, high) == (pytest.approx(0.0164, abs=1e-4), pytest.approx(0.1128, abs=1e-4))
    assert stats.binomial_interval(0, 40)[0] == 0.0
    assert stats.binomial_interval(40, 40)[1] == 1.0
