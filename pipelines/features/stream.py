"""Stream worker: rating events from a Redis Stream -> online features within seconds.

  python -m pipelines.features.stream [--config FILE] [--set key=value ...]
  python -m pipelines.features.stream publish --redis HOST:PORT --user U --item I --rating R

Producers add rating events to the stream (their fields: libs/feature_stream.py).
Workers read it in a consumer group, so several share one stream and what a crashed
worker had not acknowledged is read again. For each batch the worker
  1. checks every event with the batch job's parser and refuses events naming users or
     items the store does not know (quarantined to <workdir>/features/stream_quarantine/
     and counted, never applied);
  2. reads the current activity of the users and items involved (one call each),
     applies the same updates the batch job folds over history (tables.next_*) and
     pushes the new rows through the Feast push sources to the online store;
  3. appends the events to the offline log, <workdir>/data/raw/events/<first id>.csv
     (written whole, then renamed), which the next batch run reads;
  4. acknowledges them. Events of users on the deletion list (libs/deletion_list.py)
     are acknowledged and counted, never applied, logged or quarantined.
Delivery is at least once: a batch redelivered after a crash rewrites the same log file
and re-applies its updates.
Freshness (stream arrival -> pushed online) is a Prometheus histogram on /metrics.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prometheus_client import Counter, Histogram

from libs import config as config_lib
from libs import deletion_list, log
from libs.feature_stream import DEFAULT_STREAM, publish, redis_client
from libs.feature_store_config import FeatureStoreConfig
from pipelines.data.dataset import RATING_COLUMNS
from pipelines.features import ingest, tables
from pipelines.features.definitions import push_source_name

logger = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).with_name("stream.yaml")

EVENTS = Counter("recsys_stream_events_total", "Stream events by outcome", ["outcome"])
FRESHNESS = Histogram(
    "recsys_stream_freshness_seconds", "From the stream receiving an event to its "
    "features being online", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))


@dataclass
class StreamConfig:
    redis: str = "127.0.0.1:6379"  # host:port of the Redis holding the stream
    redis_ssl: bool = False  # TLS to Redis (managed Redis services require it)
    stream: str = DEFAULT_STREAM
    group: str = "feature-updater"
    consumer: str = ""  # "" = <hostname>-<pid>
    batch_size: int = 500
    block_ms: int = 1000  # how long one read waits for new events
    workdir: str = "var"  # the feature store (features/) and the offline log (data/raw/)
    feature_store_config: str = str(ingest.DEFAULT_CONFIG)
    metrics_port: int = 9470  # 0 = a free port
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in a container, for Prometheus and probes
    log_level: str = "INFO"

    def validate(self) -> None:
        host, _, port = self.redis.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"field 'redis' must be host:port, got {self.redis!r}")
        for name in ("batch_size", "block_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"field '{name}' must be positive")
        if not self.stream or not self.group:
            raise ValueError("fields 'stream' and 'group' must not be empty")


def arrival_seconds(entry_id: str) -> float:
    """A stream entry id is <milliseconds since the epoch>-<sequence>."""
    return int(entry_id.split("-")[0]) / 1000


class Updater:
    """Applies batches of events to the online store and the offline log. Plain code: tests
    call it without a stream."""

    def __init__(self, store, workdir: str | Path):
        self.store = store
        self.events_dir = Path(workdir) / "data" / "raw" / "events"
        self.quarantine_dir = Path(workdir) / "features" / "stream_quarantine"
        self.erased = deletion_list.DeletionList(deletion_list.path_in(workdir))
        refs = {view: [f"{view}:{f.name}" for f in store.get_feature_view(view).features]
                for view in ("user_activity", "user_rated_items", "item_popularity")}
        self.user_refs = refs["user_activity"] + refs["user_rated_items"] + ["user_profile:age"]
        self.item_refs = refs["item_popularity"] + ["item_profile:genres"]

    def _parse(self, entries: list[tuple[str, dict]]
               ) -> tuple[list[dict], list[dict], int]:
        good, bad, erased = [], [], 0
        for entry_id, fields in entries:
            if str(fields.get("user_id", "")) in self.erased:
                erased += 1
                continue
            fields = {"timestamp": str(int(arrival_seconds(entry_id))), **fields}
            try:
                good.append({**tables.parse_rating({c: fields.get(c) for c in RATING_COLUMNS}),
                             "entry_id": entry_id})
            except tables.RowError as err:
                bad.append({"entry_id": entry_id, "event": fields, "field": err.field,
                            "reason": str(err)})
        return good, bad, erased

    def _read(self, refs: list[str], key: str, ids: list[str]) -> dict[str, dict]:
        if not ids:  # a batch of erased users' or unparsable events only
            return {}
        columns = self.store.get_online_features(
            features=refs, entity_rows=[{key: i} for i in ids]).to_dict()
        return {i: {name: values[row] for name, values in columns.items()}
                for row, i in enumerate(ids)}

    def apply(self, entries: list[tuple[str, dict]]) -> dict:
        events, bad, erased = self._parse(entries)
        users = self._read(self.user_refs, "user_id",
                           sorted({e["user_id"] for e in events}))
        items = self._read(self.item_refs, "item_id",
                           sorted({e["item_id"] for e in events}))
        known = []
        for event in events:  # the batch job refuses unknown entities; so does the stream
            for key, found, probe in (("user_id", users, "age"),
                                      ("item_id", items, "genres")):
                if found[event[key]][probe] is None:
                    bad.append({"entry_id": event["entry_id"], "event": event, "field": key,
                                "reason": f"unknown {key} {event[key]!r}"})
                    break
            else:
                known.append({**event, "genres": items[event["item_id"]]["genres"]})
        known.sort(key=lambda e: (e["timestamp"], e["item_id"]))
        activity, rated, popularity = {}, {}, {}
        for event in known:
            user, item = users[event["user_id"]], items[event["item_id"]]
            activity[event["user_id"]] = tables.next_user_activity(
                activity.get(event["user_id"]) or _state(user, "user_rating_count"), event)
            rated[event["user_id"]] = tables.next_user_rated_items(
                rated.get(event["user_id"]) or _state(user, "rated_items"), event)
            popularity[event["item_id"]] = tables.next_item_popularity(
                popularity.get(event["item_id"]) or _state(item, "item_rating_count"), event)
        for view, rows in (("user_activity", activity), ("user_rated_items", rated),
                           ("item_popularity", popularity)):
            if rows:
                self.store.push(push_source_name(view), pd.DataFrame(list(rows.values())))
        if known:
            self._append_log(known)
        if bad:
            self._quarantine(bad)
        EVENTS.labels("applied").inc(len(known))
        EVENTS.labels("quarantined").inc(len(bad))
        EVENTS.labels("erased").inc(erased)
        return {"applied": len(known), "quarantined": len(bad), "erased": erased}

    def _append_log(self, events: list[dict]) -> None:
        self.events_dir.mkdir(parents=True, exist_ok=True)
        path = self.events_dir / f"{events[0]['entry_id']}.csv"
        partial = path.with_suffix(".csv.partial")
        with open(partial, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=RATING_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(events)
        partial.rename(path)  # the batch job never reads half a file

    def _quarantine(self, bad: list[dict]) -> None:
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        with open(self.quarantine_dir / "events.jsonl", "a", encoding="utf-8") as f:
            for row in bad:
                f.write(json.dumps(row, default=str) + "\n")
        log.event(logger, "events quarantined", logging.WARNING, count=len(bad),
                  first=bad[0]["reason"])


def _state(row: dict, probe: str) -> dict | None:
    """The online row as the previous state of an update; None when there is none yet."""
    return None if row.get(probe) is None else row


class Worker:
    def __init__(self, config: StreamConfig, updater: Updater, client=None):
        self.config = config
        self.updater = updater
        self.client = client or redis_client(config.redis, config.redis_ssl)
        self.consumer = config.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.stopping = threading.Event()

    def ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(self.config.stream, self.config.group, id="0",
                                      mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def _read(self, position: str, block: int | None):
        reply = self.client.xreadgroup(self.config.group, self.consumer,
                                       {self.config.stream: position},
                                       count=self.config.batch_size, block=block)
        return reply[0][1] if reply else []

    def step(self) -> int:
        """One batch: what this consumer left unacknowledged first, else new events."""
        entries = self._read("0", None) or self._read(">", self.config.block_ms)
        if not entries:
            return 0
        result = self.updater.apply(entries)
        now = time.time()
        for entry_id, _ in entries:
            FRESHNESS.observe(max(0.0, now - arrival_seconds(entry_id)))
        self.client.xack(self.config.stream, self.config.group, *[i for i, _ in entries])
        log.event(logger, "batch applied", logging.DEBUG, **result)
        return len(entries)

    def run(self) -> None:
        self.ensure_group()
        log.event(logger, "consuming", stream=self.config.stream, group=self.config.group,
                  consumer=self.consumer)
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                self.step()
                backoff = 0.5
            except Exception as err:  # store or Redis down: keep the events, retry
                log.event(logger, "batch failed; retrying", logging.WARNING,
                          error=f"{type(err).__name__}: {err}"[:300])
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)


def _publish_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pipelines.features.stream publish",
                                     description="Add one rating event to the stream.")
    parser.add_argument("--redis", required=True, help="host:port")
    parser.add_argument("--stream", default=StreamConfig.stream)
    parser.add_argument("--user", required=True)
    parser.add_argument("--item", required=True)
    parser.add_argument("--rating", required=True, type=float)
    args = parser.parse_args(argv)
    print(publish(redis_client(args.redis), args.stream, args.user, args.item, args.rating))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["publish"]:
        return _publish_command(argv[1:])
    from libs.metrics import serve_metrics

    config = config_lib.from_command_line(StreamConfig, __doc__.splitlines()[0],
                                          DEFAULT_CONFIG, "RECSYS_STREAM", argv)
    log.setup("stream", config.log_level)
    try:
        store_config = config_lib.load(FeatureStoreConfig, config.feature_store_config)
        store = ingest.open_store(store_config, Path(config.workdir) / "features")
        updater = Updater(store, config.workdir)
    except Exception as err:  # no registry yet, a bad store config: say so, no traceback
        print(f"error: cannot open the feature store: {type(err).__name__}: {err}",
              file=sys.stderr)
        return 2
    worker = Worker(config, updater)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stopping.set())
    port = serve_metrics(config.metrics_port, config.metrics_host)
    log.event(logger, "metrics", metrics_port=port)
    worker.run()
    log.event(logger, "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
