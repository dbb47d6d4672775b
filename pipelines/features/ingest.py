"""Feature tables -> `feast apply` -> materialization into the online store.

  python -m pipelines.features.ingest --workdir var [--config FILE]

Reads the parquet tables the batch job wrote (`<workdir>/features/tables/`, see
`batch_job.py`). Materialization is incremental: a later run only loads what changed
since the last one. Writes under `<workdir>/features/`: the registry, the serving
summary (catalog size, most-rated items) and (SQLite) the online store.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from libs import config as config_lib, deletion_list, trends
from libs.feature_store import SUMMARY_FILE
from libs.feature_store_config import FeatureStoreConfig, repo_config
from pipelines.features import tables
from pipelines.features.definitions import definitions

# ibis (Feast's DuckDB offline store) calls a DuckDB method DuckDB 2 deprecates
warnings.filterwarnings("ignore", message=".*fetch_arrow_table", category=DeprecationWarning)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = Path(__file__).with_name("local.yaml")
TRAINING_PYTHON = ROOT / ".venv" / "training" / "bin" / "python"
# Trend rows kept in the summary: the most trending items, where the sources look.
TREND_ITEMS = 100_000
POPULAR_ITEMS = 1000


class IngestError(ValueError):
    """The tables to ingest are missing; the message says what to run."""


def run_batch_job(workdir: str | Path, data=None, timeout: float = 3600) -> dict:
    """Lands `data` (when given) under `workdir`, then runs the Beam feature job in the
    training environment, as `make features` does. Returns the job's report."""
    from pipelines.data import sources

    workdir = Path(workdir)
    if data is not None:
        sources.land(data, workdir / "data" / "raw", deletion_list.digests_in(workdir))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [str(TRAINING_PYTHON), "-m", "pipelines.features.batch_job", "--workdir",
         str(workdir)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise IngestError(f"the batch job failed ({result.returncode}):\n"
                          f"{result.stderr[-3000:]}")
    return json.loads((workdir / "features" / "tables" / "report.json").read_text())


def _table(tables_dir: Path, name: str, columns: list[str]) -> pd.DataFrame:
    return pd.read_parquet(tables_dir / name, columns=columns)


def latest_item_popularity(tables_dir: Path, batch_rows: int = 1_000_000) -> pd.DataFrame:
    """Each item's newest item_popularity row, read in batches: the table holds a row per
    item and rating second (tens of millions at scale), the result one per item."""
    import pyarrow.parquet as pq

    columns = ["item_id", "item_rating_count", "item_daily_counts", "item_first_rated",
               "item_last_rated"]
    latest = None
    for path in sorted((tables_dir / "item_popularity").glob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows,
                                                        columns=columns):
            latest = (pd.concat([latest, batch.to_pandas()], ignore_index=True)
                      if latest is not None else batch.to_pandas())
            latest = (latest
                      .sort_values("item_last_rated", kind="stable")
                      .groupby("item_id").tail(1))
    if latest is None:
        raise IngestError(f"{tables_dir / 'item_popularity'}: no rows")
    return latest


def serving_summary(tables_dir: Path) -> dict:
    """Catalog size, the popularity fallback's items (the most rated over the last
    trends.TRENDING_DAYS before the newest event, ties by all-time ratings) and the
    trend rows of the TREND_ITEMS most trending items (the candidate sources' features)."""
    items = _table(tables_dir, "item_profile", ["item_id"])
    rows = latest_item_popularity(tables_dir)
    now = int(data_time(tables_dir).timestamp())
    table = {item: trends.trend_row(list(daily), last, now, count, first)
             for item, daily, last, count, first in zip(
                 rows.item_id, rows.item_daily_counts, rows.item_last_rated,
                 rows.item_rating_count, rows.item_first_rated)}
    (window,) = [trends.WINDOWS.index(trends.TRENDING_DAYS)]
    ranked = trends.trending({item: row[window] for item, row in table.items()},
                             dict(zip(rows.item_id, rows.item_rating_count)))
    return {"num_items": len(items), "popular_window_days": trends.TRENDING_DAYS,
            "popular": [[item, round(score, 6)] for item, score in ranked[:POPULAR_ITEMS]],
            "trends_as_of": now, "trend_columns": list(trends.TREND_COLUMNS),
            "item_trends": {item: table[item] for item, _ in ranked[:TREND_ITEMS]}}


def data_time(tables_dir: Path) -> datetime:
    """Just after the newest event in the data (every table's stamps are below it)."""
    newest = _table(tables_dir, "ratings", [tables.TIMESTAMP])[tables.TIMESTAMP].max()
    return newest.to_pydatetime() + timedelta(seconds=2)


def open_store(config: FeatureStoreConfig, store_dir: Path):
    from feast import FeatureStore
    if config.offline_store.type == "duckdb":
        import ibis  # the connection Feast's DuckDB store reads the parquet tables with
        duckdb = ibis.get_backend()
        duckdb.raw_sql(f"SET memory_limit='{config.offline_store.memory_limit}'")
        duckdb.raw_sql(f"SET temp_directory='{Path(store_dir).resolve() / 'duckdb.tmp'}'")
        # row order is not part of any result we use (the training set is sorted)
        duckdb.raw_sql("SET preserve_insertion_order=false")
    return FeatureStore(config=repo_config(config, store_dir))


def apply(store, tables_dir: Path) -> None:
    objects = definitions(tables_dir)
    store.apply([*objects["entities"], *objects["views"], *objects["services"]])


def ingest(config: FeatureStoreConfig, workdir: str | Path, tables_dir: str | Path = "",
           end: datetime | None = None, progress=print):
    progress = progress or (lambda _message: None)
    store_dir = Path(workdir) / "features"
    tables_dir = Path(tables_dir) if tables_dir else store_dir / "tables"
    if not (tables_dir / "report.json").exists():
        raise IngestError(f"{tables_dir}: no feature tables; run the batch job first "
                          "(python -m pipelines.features.batch_job, or make features)")
    store_dir.mkdir(parents=True, exist_ok=True)
    (store_dir / SUMMARY_FILE).write_text(json.dumps(serving_summary(tables_dir)))
    store = open_store(config, store_dir)
    apply(store, tables_dir)
    # Event time, not wall-clock time, bounds each run: the next run then loads exactly
    # the events after this one's, even when the data is historical (MovieLens: 1998).
    start, end = time.monotonic(), end or data_time(tables_dir)
    views = store.list_feature_views()
    incremental = [v.name for v in views
                   if v.materialization_intervals and v.name not in tables.SNAPSHOTS]
    full = [v.name for v in views if v.name not in incremental]
    if incremental:
        store.materialize_incremental(end_date=end, feature_views=incremental)
    # first runs from the oldest event (not Feast's default of one year back), and the
    # small profile snapshots every time: their stamps predate the previous run
    store.materialize(start_date=tables.EPOCH, end_date=end, feature_views=full)
    progress(f"features: materialized to {config.online_store.type} "
             f"({time.monotonic() - start:.1f}s)")
    return store


def store_command(job, description: str, argv=None) -> int:
    """The command line of a job on the feature store: --workdir, --config, and errors
    as one line naming the file and field."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", default="var")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    args = parser.parse_args(argv)
    try:
        config = config_lib.load(FeatureStoreConfig, args.config,
                                 env_prefix="RECSYS_FEATURES")
        job(config, args.workdir)
    except (config_lib.ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    return store_command(ingest, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
