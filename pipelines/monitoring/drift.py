"""Drift statistics: how far a recent sample's distribution is from a reference sample's.

  numeric      population stability index (PSI) over bins cut at the reference's
               quantiles, so each bin holds about the same share of the reference;
               empty bins are floored at `epsilon` (PSI divides and takes logs)
  categorical  Jensen-Shannon divergence (log base 2, so 0..1) and the L-infinity
               distance (the largest change in one value's share), TFDV's drift
               comparator's two measures. Values outside the reference's
               `max_categories` most frequent are pooled into one OTHER bucket:
               over thousands of ids the JSD of two samples of the *same*
               distribution is far from 0 (0.14-0.17 for two samples of 3,000
               MovieLens ratings' user or item ids), pooled it is under 0.01.

Pure numpy, no I/O: the CLI (check.py) reads the windows and calls these.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

OTHER = "(other)"


@dataclass
class Comparison:
    """One feature compared: scores per method and the two distributions behind them."""
    kind: str  # "numeric" | "categorical" | "share"
    scores: dict[str, float]
    labels: list[str]  # bin or category labels, for the report's plots
    reference: list[float]  # shares per label
    recent: list[float]
    reference_rows: int
    recent_rows: int
    extra: dict = field(default_factory=dict)


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's 1/bins .. (bins-1)/bins quantiles, each an
    observed value (not interpolated: for ages or ratings an edge between two values
    makes empty bins); repeated edges collapse, so discrete features get fewer bins."""
    inner = np.linspace(0, 1, bins + 1)[1:-1]
    return np.unique(np.quantile(reference, inner, method="inverted_cdf"))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values per bin (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"),
                         minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(reference: np.ndarray, recent: np.ndarray, epsilon: float = 1e-4) -> float:
    """Sum over bins of (recent - reference) * ln(recent / reference), shares floored at
    epsilon."""
    expected = np.maximum(np.asarray(reference, float), epsilon)
    actual = np.maximum(np.asarray(recent, float), epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def jsd(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits: finite even where one share is 0."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        held = a > 0
        return float(np.sum(a[held] * np.log2(a[held] / m[held])))

    return max(0.0, (kl(p) + kl(q)) / 2)  # max: rounding can give -1e-17


def linf(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(p, float) - np.asarray(q, float)), initial=0.0))


def compare_numeric(reference, recent, bins: int = 10, epsilon: float = 1e-4) -> Comparison:
    reference, recent = np.asarray(reference, float), np.asarray(recent, float)
    edges = quantile_edges(reference, bins)
    expected, actual = bin_shares(reference, edges), bin_shares(recent, edges)
    bounds = ["-inf", *(f"{e:.4g}" for e in edges), "inf"]
    labels = [f"({low}, {high}]" for low, high in zip(bounds, bounds[1:])]
    return Comparison("numeric", {"psi": psi(expected, actual, epsilon)}, labels,
                      expected.tolist(), actual.tolist(), len(reference), len(recent),
                      {"edges": edges.tolist(), "reference_mean": float(reference.mean()),
                       "recent_mean": float(recent.mean())})


def category_shares(reference, recent, max_categories: int = 50
                    ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Labels and shares of both samples over the reference's most frequent values (ties
    by value, so the same input gives the same labels), the rest pooled as OTHER."""
    ref_counts, new_counts = Counter(map(str, reference)), Counter(map(str, recent))
    kept = sorted(sorted(ref_counts, key=lambda v: (-ref_counts[v], v))[:max_categories])
    ref = [ref_counts[v] for v in kept]
    new = [new_counts[v] for v in kept]
    other = (sum(ref_counts.values()) - sum(ref), sum(new_counts.values()) - sum(new))
    labels = list(kept)
    if any(other):
        labels.append(OTHER)
        ref.append(other[0])
        new.append(other[1])
    ref, new = np.array(ref, float), np.array(new, float)
    return labels, ref / max(ref.sum(), 1), new / max(new.sum(), 1)


def compare_categorical(reference, recent, max_categories: int = 50) -> Comparison:
    reference, recent = list(reference), list(recent)
    labels, p, q = category_shares(reference, recent, max_categories)
    return Comparison("categorical", {"jsd": jsd(p, q), "linf": linf(p, q)}, labels,
                      p.tolist(), q.tolist(), len(reference), len(recent))


def share_difference(reference: np.ndarray, recent: np.ndarray) -> Comparison:
    """A yes/no signal (an answer fell back): recent share minus reference share, as an
    absolute value (a rise and a fall both mean serving changed)."""
    ref, new = float(np.mean(reference)), float(np.mean(recent))
    return Comparison("share", {"share_diff": abs(new - ref)}, ["yes", "no"],
                      [ref, 1 - ref], [new, 1 - new], len(reference), len(recent),
                      {"reference_share": ref, "recent_share": new})


@dataclass
class Result:
    """One feature's comparison judged against its thresholds (method -> threshold)."""
    check: str  # "features" | "label" | "predictions"; retrieval_features, retrieval_label
    feature: str
    comparison: Comparison
    thresholds: dict[str, float]

    @property
    def drifted(self) -> list[str]:
        """Methods whose score is above their threshold."""
        return [m for m, t in self.thresholds.items() if self.comparison.scores[m] > t]

    @property
    def detected(self) -> bool:
        return bool(self.drifted)

    def to_dict(self) -> dict:
        c = self.comparison
        return {"check": self.check, "feature": self.feature, "kind": c.kind,
                "detected": self.detected, "scores": c.scores, "thresholds": self.thresholds,
                "drifted_methods": self.drifted, "reference_rows": c.reference_rows,
                "recent_rows": c.recent_rows, "labels": c.labels, "reference": c.reference,
                "recent": c.recent, **c.extra}
