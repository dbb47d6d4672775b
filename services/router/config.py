"""Router configuration (schema; defaults in config.yaml)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RouterConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 9101
    candidate_service: str = "127.0.0.1:50052"
    ranking_service: str = "127.0.0.1:50053"
    experiments_file: str = "services/router/experiments.yaml"
    experiments_poll_seconds: float = 2.0
    # Whole-request budget when the client sets no deadline (or a longer one).
    deadline_ms: int = 400
    max_results: int = 100
    # Popular-items fallback when the candidate service is down.
    catalog_dir: str = "var/data/catalog"
    grace_seconds: float = 5.0
    log_level: str = "INFO"

    def validate(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"field 'port' must be 0..65535, got {self.port}")
        if self.deadline_ms <= 0:
            raise ValueError("field 'deadline_ms' must be positive")
        if self.max_results <= 0:
            raise ValueError("field 'max_results' must be positive")
