"""Candidate service configuration (schema; defaults in config.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field

from libs.candidate_sources import SOURCES
from libs.feature_spec import MODEL_NAMES
from libs.service import ModelStageConfig


@dataclass
class CandidateConfig(ModelStageConfig):
    port: int = 50052
    metrics_port: int = 9102
    model_name: str = MODEL_NAMES.retrieval
    max_candidates: int = 500
    # where the retrieval model's versions live (the model server's base_path): each
    # version's candidate sources are read from <version>/assets.extra/
    model_base_path: str = "var/model_repo/retrieval"
    # merged when a request names none (libs/candidate_sources.py)
    sources: list[str] = field(default_factory=lambda: list(SOURCES))
    # Search each version's candidate index (<version>/assets.extra/candidate_index/)
    # with its query embedding; false: ask the model for its own (brute-force) top-k.
    candidate_index: bool = True
    # catalogs of at least this many items are searched through the IVF index
    # (approximate), smaller ones exactly
    ann_min_items: int = 100_000
    # cells of the IVF index scanned per query: recall against latency (bench-scale)
    ann_probes: int = 96
    index_poll_seconds: float = 5.0  # how often new versions' indexes are looked for
    # how often the trending and popular items are re-read from the feature store (the
    # stream keeps its rows current); 0: only at start (a static catalog)
    trends_refresh_seconds: float = 60.0

    def validate(self) -> None:
        super().validate()
        for name in ("ann_min_items", "ann_probes"):
            if getattr(self, name) < 1:
                raise ValueError(f"field '{name}' must be at least 1")
        if self.index_poll_seconds <= 0:
            raise ValueError("field 'index_poll_seconds' must be positive")
        if self.trends_refresh_seconds < 0:
            raise ValueError("field 'trends_refresh_seconds' must be 0 (never) or positive")
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown or not self.sources:
            raise ValueError(f"field 'sources' must name some of {', '.join(SOURCES)}; "
                             f"got {self.sources}")
