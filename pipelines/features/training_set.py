"""Training sets by point-in-time join: every label event with its features as of then.

  python -m pipelines.features.training_set --workdir var [--config FILE]

The entity rows are the label events the batch job kept (`tables/ratings`); Feast's
`get_historical_features` joins each with the values of the `ranking` feature service
(what the models read) stamped at or before the event, never after. One snapshot per
span, which the training pipeline's ExampleGen reads:
  <workdir>/data/training_sets/span-<S>/ratings.parquet  label events with features
  <workdir>/data/training_sets/span-<S>/items.parquet    the item catalog (what the
                                                         retrieval index will hold)
  <workdir>/data/training_sets/span-<S>/snapshot.json
The span S is the newest event the set holds (seconds since the epoch), so newer data
sorts later; snapshot.json records the content hash (SHA-256 of both tables in a
canonical order and format), row count, time range, the features joined and the raw
files read.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from libs import feature_spec
from libs.feature_store import RANKING_SERVICE
from libs.feature_store_config import FeatureStoreConfig
from pipelines.features import ingest, tables

DEFAULT_CONFIG = ingest.DEFAULT_CONFIG
SETS_DIR = Path("data") / "training_sets"
COLUMNS = feature_spec.STORED_FEATURES
ITEM_COLUMNS = feature_spec.ITEM_FEATURES


ROW_ORDER = ["timestamp", "user_id", "item_id"]
CHUNK_ROWS = 1_000_000  # label events joined at a time: memory stays bounded


def _csv(table: pd.DataFrame, header: bool = True) -> bytes:
    return table.to_csv(index=False, header=header, float_format="%.6g",
                        lineterminator="\n").encode()


def content_hash(rows: pd.DataFrame, items: pd.DataFrame) -> str:
    """SHA-256 over both tables sorted and printed one way: equal data, equal hash,
    whatever the file format or library versions (`build` computes the same digest
    chunk by chunk)."""
    digest = hashlib.sha256(_csv(rows.sort_values(ROW_ORDER, kind="stable")))
    digest.update(_csv(items.sort_values("item_id", kind="stable")))
    return digest.hexdigest()


def catalog(tables_dir: Path) -> pd.DataFrame:
    items = pd.read_parquet(tables_dir / "item_profile", columns=list(ITEM_COLUMNS))
    for name in ITEM_COLUMNS:
        items[name] = [feature_spec.coerce(name, v) for v in items[name]]
    return items.sort_values("item_id", ignore_index=True)


def join(store, labels: pd.DataFrame) -> pd.DataFrame:
    """Label events -> rows of the feature spec, features as of each event."""
    service = store.get_feature_service(RANKING_SERVICE)
    joined = store.get_historical_features(entity_df=labels, features=service).to_df()
    if len(joined) != len(labels):  # the join must neither drop nor duplicate labels
        raise RuntimeError(f"point-in-time join returned {len(joined)} rows for "
                           f"{len(labels)} label events")
    since_epoch = joined[tables.TIMESTAMP] - pd.Timestamp(0, tz="UTC")
    rows = joined.assign(timestamp=since_epoch // pd.Timedelta(seconds=1))
    for name in COLUMNS:  # entities the store does not know get the spec's defaults
        rows[name] = [feature_spec.coerce(name, v) for v in rows[name]]
    return rows[list(COLUMNS)].sort_values(ROW_ORDER, kind="stable", ignore_index=True)


def build(config: FeatureStoreConfig, workdir: str | Path, tables_dir: str | Path = "",
          progress=print, chunk_rows: int = CHUNK_ROWS) -> dict:
    """Joins the label events in time order, chunk_rows at a time, each chunk appended to
    the set's parquet file and to its content hash."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    progress = progress or (lambda _message: None)
    workdir = Path(workdir)
    tables_dir = Path(tables_dir) if tables_dir else workdir / "features" / "tables"
    start = time.monotonic()
    store = ingest.open_store(config, workdir / "features")
    # an arrow table: 20M label events take a fraction of pandas' object strings
    labels = pq.read_table(tables_dir / "ratings").sort_by(
        [(tables.TIMESTAMP, "ascending"), ("user_id", "ascending"),
         ("item_id", "ascending")])
    if not len(labels):
        raise ingest.IngestError(f"{tables_dir / 'ratings'}: no label events")
    span = int(labels[tables.TIMESTAMP][-1].as_py().timestamp())
    out = workdir / SETS_DIR / f"span-{span}"
    new = out.with_name(out.name + ".new")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    digest, writer, first = hashlib.sha256(), None, None
    try:
        for lo in range(0, len(labels), chunk_rows):
            chunk = labels.slice(lo, chunk_rows)
            rows = join(store, chunk.to_pandas())
            digest.update(_csv(rows, header=lo == 0))
            table = pa.Table.from_pandas(rows, preserve_index=False,
                                         schema=writer.schema if writer else None)
            writer = writer or pq.ParquetWriter(new / "ratings.parquet", table.schema)
            writer.write_table(table)
            first = first if first is not None else int(rows.timestamp.min())
            if len(labels) > chunk_rows:
                progress(f"features: training set {lo + len(chunk):,} / {len(labels):,} "
                         f"rows ({time.monotonic() - start:.0f}s)")
    finally:
        if writer:
            writer.close()
    items = catalog(tables_dir)
    digest.update(_csv(items))
    snapshot = {
        "span": span, "rows": len(labels), "items": len(items),
        "content_sha256": digest.hexdigest(),
        "first_event": first, "last_event": span,
        "feature_service": RANKING_SERVICE, "feast_project": config.project,
        "raw_files": json.loads((tables_dir / "report.json").read_text())["raw_files"],
    }
    items.to_parquet(new / "items.parquet", index=False)
    (new / "snapshot.json").write_text(json.dumps(snapshot, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    new.rename(out)
    progress(f"features: training set span-{span}: {len(labels):,} rows, "
             f"sha256 {snapshot['content_sha256'][:12]} "
             f"({time.monotonic() - start:.1f}s) -> {out}")
    return snapshot


def main(argv=None) -> int:
    return ingest.store_command(build, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
