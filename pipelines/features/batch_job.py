"""Batch feature job (Apache Beam): raw tables -> feature tables (parquet) + quarantine.

  python -m pipelines.features.batch_job --workdir var [--data-dir DIR | --synthetic]
                                         [--runner DirectRunner] [other Beam options]

Reads the landing layout `<workdir>/data/raw/`: users.csv, items.csv, ratings.csv and
events/*.csv (what the stream worker appends). With --data-dir or --synthetic, or when
nothing has landed yet, it first lands MovieLens (or generated data) there.
Rows that are corrupt, outside the feature spec, duplicated or naming an unknown user or
item go to `quarantine/` with the reason and are counted; they never reach the tables.
Rows of users on the deletion list (<workdir>/privacy/, libs/deletion_list.py) are dropped
and counted, before anything else reads them.
Writes `<workdir>/features/tables/<table>/*.parquet` (and `ratings/`, the clean label
events) into a new directory, swapped in only when the job succeeds: a failed run keeps
the previous tables. The same code runs on Dataflow, Flink or Spark given their options.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

RAW_TABLES = {"users": "users.csv", "items": "items.csv", "ratings": "ratings.csv"}
EVENTS_DIR = "events"


def _schemas():
    import pyarrow as pa

    ts = ("event_timestamp", pa.timestamp("us", tz="UTC"))
    strings = pa.list_(pa.string())
    fields = {
        "user_profile": [("user_id", pa.string()), ("age", pa.int64()),
                         ("age_group", pa.string()), ("gender", pa.string()),
                         ("occupation", pa.string()), ("zip_region", pa.string()), ts],
        "item_profile": [("item_id", pa.string()), ("title", pa.string()),
                         ("title_tokens", strings), ("genres", pa.string()),
                         ("release_year", pa.int64()), ts],
        "user_activity": [("user_id", pa.string()), ("user_rating_count", pa.int64()),
                          ("user_mean_rating", pa.float32()),
                          ("genre_affinity", pa.list_(pa.float32())),
                          ("recent_items", strings), ts],
        "item_popularity": [("item_id", pa.string()), ("item_rating_count", pa.int64()),
                            ("item_mean_rating", pa.float32()),
                            ("item_rating_count_30d", pa.int64()),
                            ("item_daily_counts", pa.list_(pa.int64())),
                            ("item_first_rated", pa.int64()),
                            ("item_last_rated", pa.int64()), ts],
        "user_rated_items": [("user_id", pa.string()), ("rated_items", strings), ts],
        "ratings": [("user_id", pa.string()), ("item_id", pa.string()),
                    ("rating", pa.float32()), ts],
    }
    return {name: pa.schema(columns) for name, columns in fields.items()}


def raw_files(raw_dir: Path) -> dict[str, list[str]]:
    """Files per raw table; a missing table or a wrong header is an error naming it."""
    from pipelines.data.dataset import (DataError, ITEM_COLUMNS, RATING_COLUMNS,
                                        USER_COLUMNS)
    columns = {"users": USER_COLUMNS, "items": ITEM_COLUMNS, "ratings": RATING_COLUMNS}
    files = {name: [raw_dir / file] for name, file in RAW_TABLES.items()}
    files["ratings"] += sorted((raw_dir / EVENTS_DIR).glob("*.csv"))
    for name, paths in files.items():
        for path in paths:
            try:
                with open(path, newline="", encoding="utf-8") as f:
                    header = next(csv.reader(f), [])
            except FileNotFoundError:
                raise DataError(f"{path}: not found (land data first: --data-dir or "
                                "--synthetic)") from None
            if tuple(header) != columns[name]:
                raise DataError(f"{path}: header {header} is not {list(columns[name])}")
    return {name: [str(p) for p in paths] for name, paths in files.items()}


def build(pipeline, files: dict[str, list[str]], out: Path,
          erased: frozenset[str] = frozenset()) -> None:
    """Wires the job; only plain functions from tables.py compute values. `erased`: the
    deletion list's digests."""
    import apache_beam as beam
    from apache_beam.metrics import Metrics

    from libs import deletion_list
    from pipelines.data.dataset import ITEM_COLUMNS, RATING_COLUMNS, USER_COLUMNS
    from pipelines.features import tables

    schemas = _schemas()
    quarantined = []

    def quarantine(table, field, reason, source, line):
        Metrics.counter("quarantined", f"{table}.{field}").inc()
        return beam.pvalue.TaggedOutput("quarantine", json.dumps(
            {"table": table, "field": field, "reason": reason, "file": source,
             "row": line}))

    def parse(element, table, columns, parser):
        source, line = element
        if not line.strip():
            return
        Metrics.counter("read", table).inc()
        try:
            values = next(csv.reader([line]))
            fields = dict(zip(columns, values))
            if erased and deletion_list.digest(fields.get("user_id", "")) in erased:
                Metrics.counter("erased", table).inc()  # not even to quarantine
                return
            if len(values) != len(columns):
                raise tables.RowError("row", f"{len(values)} fields, expected {len(columns)}")
            yield parser(fields)
        except tables.RowError as err:
            yield quarantine(table, err.field, str(err), source, line)

    def first_of_key(keyed, table, key):
        _, rows = keyed
        rows = list(rows)
        yield rows[0]
        for row in rows[1:]:
            yield quarantine(table, key, f"duplicate {key} {row[key]!r}", "", json.dumps(row))

    def read(name, columns, parser, key=None):
        rows = (pipeline
                | f"List{name}" >> beam.Create(files[name])
                | f"Read{name}" >> beam.io.ReadAllFromText(skip_header_lines=1,
                                                            with_filename=True)
                | f"Parse{name}" >> beam.FlatMap(parse, name, columns, parser)
                .with_outputs("quarantine", main="rows"))
        quarantined.append(rows.quarantine)
        if key is None:
            return rows.rows
        unique = (rows.rows
                  | f"Key{name}" >> beam.Map(lambda r: (r[key], r))
                  | f"Group{name}" >> beam.GroupByKey()
                  | f"Dedup{name}" >> beam.FlatMap(first_of_key, name, key)
                  .with_outputs("quarantine", main="rows"))
        quarantined.append(unique.quarantine)
        return unique.rows

    users = read("users", USER_COLUMNS, tables.parse_user, "user_id")
    items = read("items", ITEM_COLUMNS, tables.parse_item, "item_id")
    ratings = read("ratings", RATING_COLUMNS, tables.parse_rating)

    def known(rating, user_ids, item_genres):
        """Ratings of known users and items, each with its item's genres."""
        for field, ids in (("user_id", user_ids), ("item_id", item_genres)):
            if rating[field] not in ids:
                yield quarantine("ratings", field, f"unknown {field} {rating[field]!r}",
                                 "", json.dumps(rating))
                return
        yield {**rating, "genres": item_genres[rating["item_id"]]}

    user_ids = beam.pvalue.AsDict(users | "UserKeys" >> beam.Map(lambda r: (r["user_id"], 1)))
    item_genres = beam.pvalue.AsDict(
        items | "ItemGenres" >> beam.Map(lambda r: (r["item_id"], r["genres"])))
    checked = (ratings | "KnownEntities" >> beam.FlatMap(known, user_ids, item_genres)
               .with_outputs("quarantine", main="rows"))
    quarantined.append(checked.quarantine)
    ratings = checked.rows

    def write(rows, name):
        rows | f"Write{name}" >> beam.io.WriteToParquet(
            str(out / name / "part"), schemas[name], file_name_suffix=".parquet")

    write(users | "UserProfile" >> beam.Map(tables.user_profile_row), "user_profile")
    write(items | "ItemProfile" >> beam.Map(tables.item_profile_row), "item_profile")
    write(ratings | "LabelEvents" >> beam.Map(tables.rating_row), "ratings")
    # Grouped values are tuples of the fields the tables need, not the rating dicts: the
    # runner holds every grouped value at once (20M ratings: GiBs saved)
    def keyed(key, fields):
        return lambda r: (r[key], tuple(r[f] for f in fields))

    def rows(key, fields):
        return lambda kv: [{key: kv[0], **dict(zip(fields, values))} for values in kv[1]]

    user_fields = ("item_id", "rating", "timestamp", "genres")
    by_user = (ratings | "KeyByUser" >> beam.Map(keyed("user_id", user_fields))
               | "GroupByUser" >> beam.GroupByKey()
               | "UserRatings" >> beam.Map(rows("user_id", user_fields)))
    write(by_user | "UserActivity" >> beam.FlatMap(tables.user_activity_rows),
          "user_activity")
    write(by_user | "UserRatedItems" >> beam.Map(tables.user_rated_items_row),
          "user_rated_items")
    item_fields = ("rating", "timestamp")
    write(ratings | "KeyByItem" >> beam.Map(keyed("item_id", item_fields))
          | "GroupByItem" >> beam.GroupByKey()
          | "ItemRatings" >> beam.Map(rows("item_id", item_fields))
          | "ItemPopularity" >> beam.FlatMap(tables.item_popularity_rows),
          "item_popularity")
    (quarantined | "AllQuarantined" >> beam.Flatten()
     | "WriteQuarantine" >> beam.io.WriteToText(str(out / "quarantine" / "rows"),
                                                file_name_suffix=".jsonl"))


def _counters(result) -> dict[str, dict[str, int]]:
    from apache_beam.metrics.metric import MetricsFilter

    counts: dict[str, dict[str, int]] = {"read": {}, "quarantined": {}, "erased": {}}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        key = counter.key.metric
        if key.namespace in counts:
            group = counts[key.namespace]
            group[key.name] = group.get(key.name, 0) + counter.committed
    return counts


def run(raw_dir: Path, tables_dir: Path, beam_args: list[str] = (), progress=print,
        erased: frozenset[str] = frozenset()) -> dict:
    """Runs the job and swaps the new tables in; returns the report it writes. `erased`:
    the deletion list's digests."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    progress = progress or (lambda _message: None)
    files = raw_files(raw_dir)
    new = tables_dir.with_name(tables_dir.name + ".new")
    shutil.rmtree(new, ignore_errors=True)
    start = time.monotonic()
    options = PipelineOptions(["--runner=DirectRunner", *beam_args])
    pipeline = beam.Pipeline(options=options)
    build(pipeline, files, new, erased)
    result = pipeline.run()
    result.wait_until_finish()
    counts = _counters(result)
    report = {**counts, "raw_files": files, "seconds": round(time.monotonic() - start, 1)}
    (new / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    old = tables_dir.with_name(tables_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if tables_dir.exists():
        tables_dir.rename(old)
    new.rename(tables_dir)
    shutil.rmtree(old, ignore_errors=True)
    bad = sum(counts["quarantined"].values())
    by_field = f" {counts['quarantined']}" if bad else ""
    dropped = sum(counts["erased"].values())
    erased_note = f", dropped {dropped} of erased users" if dropped else ""
    progress(f"features: batch job read {counts['read']}, quarantined {bad}{by_field}"
             f"{erased_note} ({report['seconds']}s) -> {tables_dir}")
    return report


def main(argv=None) -> int:
    from libs import deletion_list
    from pipelines.data import sources
    from pipelines.data.dataset import DataError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="var")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-dir", default="", help="MovieLens 100K directory to land")
    source.add_argument("--synthetic", action="store_true", help="land generated data")
    parser.add_argument("--synthetic-size", type=int, nargs=3, metavar=("USERS", "ITEMS",
                        "RATINGS"), default=(943, 1682, 100_000))
    args, beam_args = parser.parse_known_args(argv)
    raw_dir = Path(args.workdir) / "data" / "raw"
    try:
        if args.data_dir or args.synthetic or not (raw_dir / RAW_TABLES["users"]).exists():
            users, items, ratings = args.synthetic_size
            data = sources.load(args.data_dir, args.synthetic, users, items, ratings)
            sources.land(data, raw_dir, deletion_list.digests_in(args.workdir))
            print(f"data: landed {data.source}: {len(data.users):,} users, "
                  f"{len(data.items):,} items, {len(data.ratings):,} ratings -> {raw_dir}",
                  flush=True)
        run(raw_dir, Path(args.workdir) / "features" / "tables", beam_args,
            erased=deletion_list.digests_in(args.workdir))
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
