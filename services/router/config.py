"""Router configuration (schema; defaults in config.yaml)."""
from __future__ import annotations

from dataclasses import dataclass

from libs.service import FeatureClientConfig


@dataclass
class RouterConfig(FeatureClientConfig):
    port: int = 50051
    metrics_port: int = 9101
    candidate_service: str = "127.0.0.1:50052"
    ranking_service: str = "127.0.0.1:50053"
    experiments_file: str = "services/router/experiments.yaml"
    experiments_poll_seconds: float = 2.0
    # Whole-request budget when the client sets no deadline (or a longer one).
    deadline_ms: int = 400
    max_results: int = 100
    # one JSON line per response (services/router/exposure_log.py); empty: no log
    exposure_log_dir: str = "var/exposures"
    exposure_fsync_seconds: float = 1.0
    # shadow comparisons (services/router/shadow.py), one JSON line each; empty: metrics only
    shadow_log_dir: str = "var/shadow"
    shadow_max_in_flight: int = 8
    # the admin API's (ExperimentService) editors and viewers: a YAML list of
    # {who, sha256 of the token, role}; empty: no one may change experiments
    admin_tokens_file: str = ""
    experiment_audit_log: str = "var/experiments_audit.jsonl"

    def validate(self) -> None:
        super().validate()
        if self.deadline_ms <= 0:
            raise ValueError("field 'deadline_ms' must be positive")
        if self.max_results <= 0:
            raise ValueError("field 'max_results' must be positive")
        if self.shadow_max_in_flight < 1:
            raise ValueError("field 'shadow_max_in_flight' must be at least 1")
        if self.exposure_fsync_seconds < 0:
            raise ValueError("field 'exposure_fsync_seconds' must not be negative")
