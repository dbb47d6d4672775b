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

    def validate(self) -> None:
        super().validate()
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown or not self.sources:
            raise ValueError(f"field 'sources' must name some of {', '.join(SOURCES)}; "
                             f"got {self.sources}")
