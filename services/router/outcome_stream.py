"""Publishes the ratings of the outcome log to the feature stream (libs/feature_stream.py),
once per event id, so the stream worker moves online features with them.

The outcome log is the outbox: RecordOutcomes answers once its events are in the log, and
this publisher follows the log files from a checkpoint (each file's published byte offset,
in <log dir>/.published/), so ratings recorded while Redis is down are published when it
is back. Each rating goes through one Lua script that first sets
`recsys:outcome:<event id>` (NX, expiring after `key_ttl_seconds`) and adds the stream
entry only when that key was new: a line read twice (a restart before the checkpoint
moved, two routers on one volume) or a retry that reached two replicas is added once.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from libs import feature_stream, log, metrics

logger = logging.getLogger(__name__)
KEY_PREFIX = "recsys:outcome:"
CHECKPOINTS = ".published"

# KEYS: dedupe key, stream; ARGV: ttl, then the event's fields as name, value pairs
ADD_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
end
return false
"""


class OutcomePublisher:
    def __init__(self, directory: str | Path, prefix: str, client, stream: str,
                 key_ttl_seconds: int, batch_size: int = 500):
        self.directory, self.prefix = Path(directory), prefix
        self.client, self.stream = client, stream
        self.key_ttl, self.batch_size = int(key_ttl_seconds), batch_size
        self.checkpoints = self.directory / CHECKPOINTS
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self._add_once = client.register_script(ADD_ONCE)

    def _offset(self, path: Path) -> int:
        try:
            return int((self.checkpoints / path.name).read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def _save(self, path: Path, offset: int) -> None:
        temporary = self.checkpoints / f".{path.name}.{os.getpid()}"
        temporary.write_text(str(offset))
        temporary.replace(self.checkpoints / path.name)  # atomic: never a torn checkpoint

    def _unread(self) -> Iterator[tuple[Path, int, BinaryIO]]:
        """Each log file with bytes past its checkpoint: (path, checkpoint, the file open
        at it)."""
        for path in sorted(self.directory.glob(f"{self.prefix}-*.jsonl")):
            offset = self._offset(path)
            if path.stat().st_size > offset:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    yield path, offset, handle

    def lag_seconds(self, now: float) -> float:
        """Age of the oldest logged event not yet published (0: none waits)."""
        oldest = now
        for path, _, handle in self._unread():
            try:
                oldest = min(oldest, float(json.loads(handle.readline())["received"]))
            except (ValueError, KeyError, TypeError):  # cut or still being written
                oldest = min(oldest, path.stat().st_mtime)
        return max(0.0, now - oldest)

    def step(self) -> int:
        """Publishes what the logs hold beyond their checkpoints; returns how many
        ratings were new to the stream. Redis errors propagate (the caller retries)."""
        try:
            return self._step()
        finally:
            metrics.OUTCOME_STREAM_LAG.set(self.lag_seconds(time.time()))

    def _step(self) -> int:
        added = 0
        for path, offset, handle in self._unread():
            data = handle.read()
            complete = data.rfind(b"\n") + 1  # a line being written waits for its end
            lines = data[:complete].splitlines()
            for start in range(0, len(lines), self.batch_size):
                added += self._publish(path, lines[start:start + self.batch_size])
            self._save(path, offset + complete)
        return added

    def _publish(self, path: Path, lines: list[bytes]) -> int:
        pipe = self.client.pipeline(transaction=False)
        queued = 0
        for line in lines:
            if not line.strip():  # a record erased in place (pipelines/privacy)
                continue
            try:
                event = json.loads(line)
                if event["type"] != "rating":
                    continue
                key = KEY_PREFIX + event["event_id"]
                fields = feature_stream.rating_fields(
                    event["user_id"], event["item_id"], event["value"],
                    int(event["timestamp"]))
            except (ValueError, KeyError, TypeError):
                # a line cut by a crash mid-write (never acknowledged) and glued to the
                # next one when a restarted router appends to the same file
                metrics.OUTCOME_PUBLISHED.labels("unreadable").inc()
                log.event(logger, "outcome log line unreadable; skipped", logging.WARNING,
                          file=path.name, line=line[:200].decode(errors="replace"))
                continue
            self._add_once(keys=[key, self.stream],
                           args=[self.key_ttl, *(v for kv in fields.items() for v in kv)],
                           client=pipe)
            queued += 1
        if not queued:
            return 0
        results = pipe.execute()
        added = sum(1 for r in results if r)
        metrics.OUTCOME_PUBLISHED.labels("added").inc(added)
        metrics.OUTCOME_PUBLISHED.labels("already_added").inc(queued - added)
        return added
