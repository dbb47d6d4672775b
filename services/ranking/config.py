"""Ranking service configuration (schema; defaults in config.yaml)."""
from __future__ import annotations

from dataclasses import dataclass

from libs.feature_spec import MODEL_NAMES


@dataclass
class RankingConfig:
    host: str = "127.0.0.1"
    port: int = 50053
    metrics_port: int = 9103
    model_server: str = "127.0.0.1:8500"
    model_name: str = MODEL_NAMES.ranking
    model_timeout_ms: int = 150
    catalog_dir: str = "var/data/catalog"
    max_candidates: int = 1000
    grace_seconds: float = 5.0
    log_level: str = "INFO"

    def validate(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"field 'port' must be 0..65535, got {self.port}")
        if self.model_timeout_ms <= 0:
            raise ValueError("field 'model_timeout_ms' must be positive")
        if self.max_candidates <= 0:
            raise ValueError("field 'max_candidates' must be positive")
