"""What every service's entry point shares: config, logs, start-up errors, the event loop."""
from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

from libs import config as config_lib, log
from libs.feature_store import FeatureStoreError


@dataclass
class ServiceConfig:
    """Fields every service has; each service's config extends it."""
    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0
    grace_seconds: float = 5.0
    log_level: str = "INFO"

    def validate(self) -> None:
        for name in ("port", "metrics_port"):
            if not 0 <= getattr(self, name) < 65536:
                raise ValueError(f"field '{name}' must be 0..65535, got {getattr(self, name)}")
        if self.grace_seconds < 0:
            raise ValueError("field 'grace_seconds' must not be negative")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"field 'log_level' must be DEBUG, INFO, WARNING or ERROR, "
                             f"got {self.log_level!r}")


@dataclass
class FeatureClientConfig(ServiceConfig):
    """A service that reads features (see libs/feature_store.py)."""
    feature_source: str = "feast"  # feast | catalog
    feature_store_config: str = "pipelines/features/local.yaml"
    feature_store_dir: str = "var/features"
    catalog_dir: str = "var/data/raw"  # for feature_source: catalog (the landed tables)
    # how long item features are reused before being read again; 0 reads every time
    item_cache_seconds: float = 60.0
    item_cache_size: int = 100_000  # items held at most (oldest go first)

    def validate(self) -> None:
        super().validate()
        if self.feature_source not in ("feast", "catalog"):
            raise ValueError(f"field 'feature_source' must be feast or catalog, "
                             f"got {self.feature_source!r}")
        if self.item_cache_seconds < 0:
            raise ValueError("field 'item_cache_seconds' must not be negative")
        if self.item_cache_size < 0:
            raise ValueError("field 'item_cache_size' must not be negative")


@dataclass
class ModelStageConfig(FeatureClientConfig):
    """A stage that calls a model on the model server with features from the store."""
    model_server: str = "127.0.0.1:8500"
    model_name: str = ""
    model_timeout_ms: int = 150
    max_candidates: int = 500

    def validate(self) -> None:
        super().validate()
        if not self.model_name:
            raise ValueError("field 'model_name' is empty")
        if self.model_timeout_ms <= 0:
            raise ValueError("field 'model_timeout_ms' must be positive")
        if self.max_candidates <= 0:
            raise ValueError("field 'max_candidates' must be positive")


C = TypeVar("C", bound=ServiceConfig)


def run(name: str, config_class: type[C], description: str, config_path: Path,
        serve: Callable[[C], Awaitable[None]], argv: list[str] | None = None) -> None:
    """Loads and validates the config, sets up logs, serves until a signal.

    Start-up problems (bad config, missing data, port in use) end the process with a
    one-line message and exit code 2, never a traceback.
    """
    config = config_lib.from_command_line(
        config_class, description, config_path, f"RECSYS_{name.upper()}", argv)
    log.setup(name, config.log_level)
    try:
        asyncio.run(serve(config))
    except (config_lib.ConfigError, FeatureStoreError, OSError) as err:
        print(f"error: {name}: {err}", file=sys.stderr)
        raise SystemExit(2) from None
