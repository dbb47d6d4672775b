"""Feature store configuration (schema): local (embedded default) and production.

Our strict schema names the file and field of a mistake before Feast sees the config;
`repo_config` turns it into Feast's RepoConfig for the stores that run here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ONLINE_TYPES = ("sqlite", "redis")
OFFLINE_TYPES = ("duckdb", "bigquery", "spark")


@dataclass
class OnlineStore:
    type: str = "sqlite"
    path: str = "online.db"  # sqlite: relative to the workdir's feature store folder
    connection_string: str = ""  # redis: host:port[,db=N,password=...]
    # redis: a read waits at most this long and is not retried, so a request falls back
    # to defaults at once when Redis is down (redis-py's default retries take seconds)
    timeout_ms: int = 50

    def validate(self) -> None:
        if self.type not in ONLINE_TYPES:
            raise ValueError(f"field 'online_store.type' must be one of {ONLINE_TYPES}, "
                             f"got {self.type!r}")
        if self.type == "redis" and not self.connection_string:
            raise ValueError("field 'online_store.connection_string' is required for redis")
        if self.timeout_ms <= 0:
            raise ValueError("field 'online_store.timeout_ms' must be positive")
        if self.type == "redis":
            self.redis_address()

    def redis_address(self) -> dict:
        """connection_string 'host:port[,db=N][,password=...][,ssl=true]' as keyword
        arguments of libs.online_store.RedisReader."""
        address, *options = self.connection_string.split(",")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("field 'online_store.connection_string' must start with "
                             f"host:port, got {address!r}")
        found: dict = {"host": host, "port": int(port)}
        for option in options:
            key, _, value = option.partition("=")
            if key == "db" and value.isdigit():
                found["db"] = int(value)
            elif key == "password":
                found["password"] = value
            elif key == "ssl" and value.lower() in ("true", "false"):
                found["ssl"] = value.lower() == "true"
            else:
                raise ValueError(f"field 'online_store.connection_string': {option!r} is "
                                 "not db=<number>, password=<text> or ssl=true|false")
        return found


@dataclass
class OfflineStore:
    # duckdb: parquet files on this machine; its point-in-time join keeps every entity
    # row (Feast's "file" store drops rows whose features all lie in their future)
    type: str = "duckdb"
    # duckdb: spill to disk beyond this (DuckDB's own default, 80% of the machine's
    # memory, gets a 20M-event materialization killed)
    memory_limit: str = "4GB"
    project_id: str = ""  # bigquery
    dataset: str = ""  # bigquery
    spark_conf: dict[str, str] = field(default_factory=dict)  # spark

    def validate(self) -> None:
        if self.type not in OFFLINE_TYPES:
            raise ValueError(f"field 'offline_store.type' must be one of {OFFLINE_TYPES}, "
                             f"got {self.type!r}")
        if not re.fullmatch(r"\d+(\.\d+)?\s*(MB|GB|MiB|GiB)", self.memory_limit):
            raise ValueError("field 'offline_store.memory_limit' must be a size such as "
                             f"4GB or 512MiB, got {self.memory_limit!r}")
        if self.type == "bigquery" and not (self.project_id and self.dataset):
            raise ValueError("fields 'offline_store.project_id' and 'offline_store.dataset' "
                             "are required for bigquery")


@dataclass
class FeatureStoreConfig:
    project: str = "recsys"
    # a file path (local) or a SQL URL such as postgresql://... (production)
    registry: str = "registry.db"
    online_store: OnlineStore = field(default_factory=OnlineStore)
    offline_store: OfflineStore = field(default_factory=OfflineStore)

    def validate(self) -> None:
        if not self.project.isidentifier():
            raise ValueError(f"field 'project' must be a plain identifier, got {self.project!r}")


def repo_config(config: FeatureStoreConfig, store_dir: str | Path):
    """Feast's RepoConfig; relative paths live under `store_dir`."""
    from feast.repo_config import RegistryConfig, RepoConfig

    store_dir = Path(store_dir).resolve()
    store_dir.mkdir(parents=True, exist_ok=True)
    if config.offline_store.type != "duckdb":
        raise ValueError(f"offline store {config.offline_store.type!r} needs its cluster; "
                         "on one machine use type: duckdb")
    sql = "://" in config.registry
    registry = RegistryConfig(
        registry_type="sql" if sql else "file",
        path=config.registry if sql else str(store_dir / config.registry),
        cache_ttl_seconds=60)
    online_store = config.online_store
    if online_store.type == "sqlite":
        online = {"type": "sqlite", "path": str(store_dir / online_store.path)}
    else:
        seconds = online_store.timeout_ms / 1000
        online = {"type": "redis", "connection_string": (
            f"{online_store.connection_string},socket_timeout={seconds},"
            f"socket_connect_timeout={seconds},retry=null")}
    return RepoConfig(project=config.project, provider="local", registry=registry,
                      online_store=online, offline_store={"type": "duckdb"},
                      entity_key_serialization_version=3, repo_path=str(store_dir),
                      # the offline store reduces each view to its entities' newest rows
                      # and writes go out in batches: Feast's default reads every row of
                      # a view into memory (20M events: killed at 23 GB)
                      materialization={"pull_latest_features": True,
                                       "online_write_batch_size": 10_000})
