"""Configuration of the end-to-end replay (schema; defaults in `replay.yaml`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).with_name("replay.yaml")


@dataclass
class ReplayConfig:
    # time quantiles of all ratings: each is a cut, trained on what came before it and
    # scored on what came after (to the end of the data)
    cuts: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.8])
    k: int = 10  # list length scored (Recall@k, NDCG@k)
    trending_days: list[int] = field(default_factory=lambda: [7, 14, 30])
    ease_lambda: float = 250.0
    # the EASE + trending blend: its trending window (one of trending_days) and weight
    # are chosen on the last validation_days before each cut
    blend_weights: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    validation_days: int = 14
    head_fraction: float = 0.2  # the most rated share of the catalog; the rest is long tail
    bootstrap_samples: int = 1000
    seed: int = 42
    request_timeout_ms: int = 2000
    # --set overrides of every cut's training pipeline (pipelines/training/config.py)
    pipeline_overrides: dict[str, object] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.cuts:
            raise ValueError("field 'cuts' must name at least one time quantile")
        for q in self.cuts:
            if not 0.0 < q < 1.0:
                raise ValueError(f"field 'cuts': {q} is not a quantile strictly between 0 and 1")
        if len(set(self.cuts)) != len(self.cuts):
            raise ValueError("field 'cuts' repeats a cut")
        if not 1 <= self.k <= 100:
            raise ValueError(f"field 'k' must be in 1..100, got {self.k}")
        if not self.trending_days or min(self.trending_days) < 1:
            raise ValueError("field 'trending_days' must list windows of at least 1 day")
        if not self.blend_weights or min(self.blend_weights) < 0:
            raise ValueError("field 'blend_weights' must list non-negative weights")
        if self.validation_days < 1:
            raise ValueError("field 'validation_days' must be at least 1")
        if not 0.0 < self.head_fraction < 1.0:
            raise ValueError("field 'head_fraction' must be between 0 and 1")
        if self.bootstrap_samples < 100:
            raise ValueError("field 'bootstrap_samples' must be at least 100")
        if self.ease_lambda <= 0 or self.request_timeout_ms <= 0:
            raise ValueError("fields 'ease_lambda' and 'request_timeout_ms' must be positive")
