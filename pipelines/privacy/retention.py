"""Retention: each store keeps its data as long as its config says, then this job deletes it.

  python -m pipelines.privacy.retention [--config FILE] [--set key=value ...] [--dry-run]

Run it daily (a CronJob in a cluster). Per store, `retention` in pipelines/privacy's
config (days; 0 keeps forever):

  exposure_log, shadow_log, outcome_log   the router's log files of days older than that
                                          (a file holds one UTC day; today's is never
                                          touched), with the outcome publisher's offsets
  event_stream                            the Redis stream's entries older than that
                                          (XTRIM MINID; the event log is the durable copy)
  event_log                               the stream's offline event log files
                                          (<workdir>/data/raw/events/<entry id>.csv) of
                                          events older than that: training data, so 0 by
                                          default
  online_inactive_users                   the online rows of users whose last rating is
                                          older than that (Feast's view TTLs only hide
                                          rows at read time; the views have none, as a
                                          profile is a snapshot that must not expire)

Prints what it deleted per store (or would, with --dry-run); exits 2 on a bad config.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from libs import config as config_lib
from services.router.outcome_stream import CHECKPOINTS  # the publisher's offset files

DAY = 86400
FILE_DAY = re.compile(r"-(\d{4}-\d{2}-\d{2})-")  # the router's <prefix>-<day>-<host>-<pid>


@dataclass
class Retention:
    exposure_log: int = 90
    shadow_log: int = 30
    outcome_log: int = 400
    event_stream: int = 7
    event_log: int = 0
    online_inactive_users: int = 0

    def validate(self) -> None:
        for name, days in vars(self).items():
            if days < 0:
                raise ValueError(f"field 'retention.{name}' must be 0 (forever) or a "
                                 f"number of days, got {days}")


def _day_start(path: Path) -> float | None:
    found = FILE_DAY.search(path.name)
    if not found:
        return None
    return time.mktime(time.strptime(found.group(1), "%Y-%m-%d")) - time.timezone


def old_log_files(directory: Path, days: int, now: float) -> list[Path]:
    """Files whose whole day ended more than `days` days ago."""
    if not days or not directory.is_dir():
        return []
    cutoff = now - days * DAY
    return sorted(p for p in directory.glob("*.jsonl")
                  if (start := _day_start(p)) is not None and start + DAY <= cutoff)


def old_event_logs(directory: Path, days: int, now: float) -> list[Path]:
    """Event log files whose events are all older: a file is named by its first entry id
    (<ms>-<seq>) and holds one batch, read within seconds of arrival."""
    if not days or not directory.is_dir():
        return []
    cutoff_ms = (now - days * DAY - DAY) * 1000  # a day's slack for the batch's span
    return sorted(p for p in directory.glob("*.csv")
                  if p.stem.split("-")[0].isdigit() and int(p.stem.split("-")[0]) < cutoff_ms)


def enforce(config, now: float | None = None, dry_run: bool = False,
            progress=print) -> dict[str, int]:
    """Deletes what is past its retention; returns how many files / entries per store."""
    now = time.time() if now is None else now
    progress = progress or (lambda _message: None)
    rules = config.retention
    deleted: dict[str, int] = {}
    for kind, name in (("exposure_log", config.exposure_log_dir),
                       ("shadow_log", config.shadow_log_dir),
                       ("outcome_log", config.outcome_log_dir)):
        old = old_log_files(config.path(name), getattr(rules, kind), now)
        if not dry_run:
            for path in old:
                path.unlink(missing_ok=True)
                (path.parent / CHECKPOINTS / path.name).unlink(missing_ok=True)
        deleted[kind] = len(old)
    old = old_event_logs(Path(config.workdir) / "data" / "raw" / "events", rules.event_log,
                         now)
    if not dry_run:
        for path in old:
            path.unlink(missing_ok=True)
    deleted["event_log"] = len(old)
    if config.stream_redis and rules.event_stream:
        from libs.feature_stream import redis_client

        client = redis_client(config.stream_redis, config.stream_redis_ssl)
        min_id = f"{int((now - rules.event_stream * DAY) * 1000)}-0"
        if dry_run:
            deleted["event_stream"] = len(client.xrange(config.stream, "-", f"({min_id}"))
        else:
            deleted["event_stream"] = client.xtrim(config.stream, minid=min_id,
                                                   approximate=False)
    if rules.online_inactive_users:
        from pipelines.privacy.user_data import stores

        online = stores(config)[0]
        users = online.inactive(now - rules.online_inactive_users * DAY)
        if not dry_run:
            for user in users:
                online.erase(user)
        deleted["online_inactive_users"] = len(users)
    for store, count in deleted.items():
        progress(f"retention: {store}: {count} {'to delete' if dry_run else 'deleted'}")
    return deleted


def main(argv=None) -> int:
    from pipelines.privacy.user_data import DEFAULT_CONFIG, PrivacyConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--dry-run", action="store_true", help="say what, delete nothing")
    args = parser.parse_args(argv)
    try:
        config = config_lib.load(PrivacyConfig, args.config, env_prefix="RECSYS_PRIVACY",
                                 overrides=config_lib.parse_overrides(args.set),
                                 overrides_name="--set")
    except config_lib.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    enforce(config, dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
