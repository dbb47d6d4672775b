"""Router configuration (schema; defaults in config.yaml)."""
from __future__ import annotations

from dataclasses import dataclass

from libs.feature_stream import DEFAULT_STREAM
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
    # outcome events (OutcomeService, services/router/outcomes.py): one JSON line each;
    # empty: RecordOutcomes answers FAILED_PRECONDITION
    outcome_log_dir: str = "var/outcomes"
    outcome_horizon_seconds: float = 7 * 86400  # older events are answered as late
    # a repeated event id within this window is a duplicate (retries come within seconds;
    # each id is held in memory, and in Redis when publishing)
    outcome_dedupe_seconds: float = 600
    outcome_max_batch: int = 1000  # events per RecordOutcomes call
    # the feature stream's Redis (host:port) the ratings are published to
    # (services/router/outcome_stream.py); empty: not published
    outcome_stream_redis: str = ""
    outcome_stream_ssl: bool = False
    outcome_stream: str = DEFAULT_STREAM
    outcome_publish_seconds: float = 0.5  # how often the publisher reads the log
    # the workdir whose stores PrivacyService (a user's data exported or erased,
    # docs/privacy.md) reaches besides the router's own logs, experiments, feature
    # store and stream; empty: PrivacyService answers FAILED_PRECONDITION
    privacy_workdir: str = ""

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
        for name in ("outcome_horizon_seconds", "outcome_dedupe_seconds",
                     "outcome_max_batch", "outcome_publish_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"field '{name}' must be positive")
        host, _, port = self.outcome_stream_redis.rpartition(":")
        if self.outcome_stream_redis and (not host or not port.isdigit()):
            raise ValueError("field 'outcome_stream_redis' must be host:port, got "
                             f"{self.outcome_stream_redis!r}")
        if self.outcome_stream_redis and not self.outcome_log_dir:
            raise ValueError("field 'outcome_stream_redis' needs 'outcome_log_dir': the "
                             "ratings are published from the outcome log")
