"""Candidate service configuration (schema; defaults in config.yaml)."""
from __future__ import annotations

from dataclasses import dataclass

from libs.feature_spec import MODEL_NAMES
from libs.service import ModelStageConfig


@dataclass
class CandidateConfig(ModelStageConfig):
    port: int = 50052
    metrics_port: int = 9102
    model_name: str = MODEL_NAMES.retrieval
    max_candidates: int = 500
