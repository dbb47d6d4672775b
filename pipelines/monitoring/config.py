"""Drift thresholds and binning: a strict schema (libs/config.py), defaults in drift.yaml.

A feature drifts when any of its methods' scores is above that method's threshold.
`features` overrides thresholds per feature ({item_id: {jsd: 0.15}}); `skip` leaves
features out. Unknown keys, features and methods are refused with the field named.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from pipelines.monitoring.features import PREDICTIONS, catalogue

DEFAULT_CONFIG = Path(__file__).with_name("drift.yaml")
METHODS = {"numeric": ("psi",), "categorical": ("jsd", "linf"), "share": ("share_diff",)}


@dataclass
class Thresholds:
    psi: float = 0.2  # population stability index, numeric features and the scores
    jsd: float = 0.1  # Jensen-Shannon divergence (bits), categorical features
    linf: float = 0.2  # largest change of one category's share
    share_diff: float = 0.05  # change of the share of answers that fell back

    def validate(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"field '{f.name}' must be positive")


@dataclass
class DriftConfig:
    thresholds: Thresholds = field(default_factory=Thresholds)
    features: dict[str, dict[str, float]] = field(default_factory=dict)
    skip: list[str] = field(default_factory=list)
    bins: int = 10  # PSI bins (reference quantiles); fewer when values repeat
    epsilon: float = 1e-4  # floor of a bin's share in the PSI
    max_categories: int = 50  # the reference's most frequent values; the rest pooled
    min_rows: int = 1000  # fewer rows (or responses) in a window: not judged, exit 2

    def validate(self) -> None:
        kinds = {c.name: c.kind for c in catalogue() + PREDICTIONS}
        if self.bins < 2:
            raise ValueError("field 'bins' must be at least 2")
        if not 0 < self.epsilon < 0.01:
            raise ValueError("field 'epsilon' must be in (0, 0.01)")
        for name in ("max_categories", "min_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"field '{name}' must be at least 1")
        for name in self.skip:
            if name not in kinds:
                raise ValueError(f"field 'skip': unknown feature {name!r}; "
                                 f"features: {', '.join(kinds)}")
        for name, overrides in self.features.items():
            if name not in kinds:
                raise ValueError(f"field 'features': unknown feature {name!r}; "
                                 f"features: {', '.join(kinds)}")
            for method, value in overrides.items():
                allowed = METHODS[kinds[name]]
                if method not in allowed:
                    raise ValueError(f"field 'features'.{name}: method {method!r} does not "
                                     f"apply to a {kinds[name]} feature (only "
                                     f"{', '.join(allowed)})")
                if value <= 0:
                    raise ValueError(f"field 'features'.{name}.{method} must be positive")

    def threshold(self, feature: str, method: str) -> float:
        return self.features.get(feature, {}).get(method, getattr(self.thresholds, method))
