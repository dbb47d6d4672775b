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


def content_hash(rows: pd.DataFrame, items: pd.DataFrame) -> str:
    """SHA-256 over both tables sorted and printed one way: equal data, equal hash,
    whatever the file format or library versions."""
    digest = hashlib.sha256()
    for table, order in ((rows, ["timestamp", "user_id", "item_id"]), (items, ["item_id"])):
        text = table.sort_values(order, kind="stable").to_csv(
            index=False, float_format="%.6g", lineterminator="\n")
        digest.update(text.encode())
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
    return rows[list(COLUMNS)].sort_values(["timestamp", "user_id", "item_id"],
                                           kind="stable", ignore_index=True)


def build(config: FeatureStoreConfig, workdir: str | Path, tables_dir: str | Path = "",
          progress=print) -> dict:
    progress = progress or (lambda _message: None)
    workdir = Path(workdir)
    tables_dir = Path(tables_dir) if tables_dir else workdir / "features" / "tables"
    start = time.monotonic()
    store = ingest.open_store(config, workdir / "features")
    labels = pd.read_parquet(tables_dir / "ratings")
    if labels.empty:
        raise ingest.IngestError(f"{tables_dir / 'ratings'}: no label events")
    rows, items = join(store, labels), catalog(tables_dir)
    span = int(rows.timestamp.max())
    snapshot = {
        "span": span, "rows": len(rows), "items": len(items),
        "content_sha256": content_hash(rows, items),
        "first_event": int(rows.timestamp.min()), "last_event": span,
        "feature_service": RANKING_SERVICE, "feast_project": config.project,
        "raw_files": json.loads((tables_dir / "report.json").read_text())["raw_files"],
    }
    out = workdir / SETS_DIR / f"span-{span}"
    new = out.with_name(out.name + ".new")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    rows.to_parquet(new / "ratings.parquet", index=False)
    items.to_parquet(new / "items.parquet", index=False)
    (new / "snapshot.json").write_text(json.dumps(snapshot, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    new.rename(out)
    progress(f"features: training set span-{span}: {len(rows):,} rows, "
             f"sha256 {snapshot['content_sha256'][:12]} "
             f"({time.monotonic() - start:.1f}s) -> {out}")
    return snapshot


def main(argv=None) -> int:
    return ingest.store_command(build, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
