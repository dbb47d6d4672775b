"""Ranking service configuration (schema; defaults in config.yaml)."""
from __future__ import annotations

from dataclasses import dataclass

from libs.feature_spec import MODEL_NAMES
from libs.service import ModelStageConfig


@dataclass
class RankingConfig(ModelStageConfig):
    port: int = 50053
    metrics_port: int = 9103
    model_name: str = MODEL_NAMES.ranking
    max_candidates: int = 1000
