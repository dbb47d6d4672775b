"""Outcome events (recsys.v1.OutcomeService): what users did with what they were shown.

A batch is checked whole (one malformed event refuses it, naming `events[i].field`), then
each event is either recorded, a duplicate (its event id was recorded within the dedupe
window) or late (older than the horizon). Recorded events are appended to the outcome log
in one write before the answer leaves, as the exposure log is, so a killed router loses
nothing it acknowledged; outcome_stream.py publishes the ratings among them to the
feature stream from that log.

Outcome log line (JSON, one per event; the experiment analysis reads it, see
pipelines/experiments/exposures.py):
  {"event_id", "type", "request_id" (null when none), "user_id", "item_id",
   "value" (the rating for a rating, 1 for the other types), "timestamp" (event time),
   "received"}
"""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from libs import metrics
from recsys.v1 import outcomes_pb2
from services.router.exposure_log import ExposureLog

TYPE_NAMES = {outcomes_pb2.IMPRESSION: "impression", outcomes_pb2.CLICK: "click",
              outcomes_pb2.PLAY: "play", outcomes_pb2.RATING: "rating"}
RATING_RANGE = (1.0, 5.0)  # the feature store's rating parser refuses anything else
MAX_ID_LENGTH = 256
MAX_FUTURE_SECONDS = 300  # clock skew tolerated between a product service and the router


class InvalidOutcome(ValueError):
    pass


def check(event: outcomes_pb2.OutcomeEvent, where: str, now: float) -> None:
    """Raises InvalidOutcome naming the field of a malformed event."""
    for name in ("event_id", "user_id", "item_id"):
        value = getattr(event, name)
        if not value.strip():
            raise InvalidOutcome(f"{where}.{name} is empty")
        if len(value) > MAX_ID_LENGTH:
            raise InvalidOutcome(f"{where}.{name} is longer than {MAX_ID_LENGTH} characters")
    if len(event.request_id) > MAX_ID_LENGTH:
        raise InvalidOutcome(f"{where}.request_id is longer than {MAX_ID_LENGTH} characters")
    if event.type not in TYPE_NAMES:
        raise InvalidOutcome(f"{where}.type must be one of "
                             f"{', '.join(outcomes_pb2.OutcomeType.Name(t) for t in TYPE_NAMES)}"
                             f", got {event.type}")
    low, high = RATING_RANGE
    if event.type == outcomes_pb2.RATING and not low <= event.value <= high:
        raise InvalidOutcome(f"{where}.value must be a rating in {low:g}..{high:g}, "
                             f"got {event.value:g}")
    if event.type != outcomes_pb2.RATING and event.value != 0:
        raise InvalidOutcome(f"{where}.value is only for RATING events; leave it 0 for "
                             f"{TYPE_NAMES[event.type].upper()}")
    if event.HasField("event_time") and event.event_time.ToNanoseconds() / 1e9 > \
            now + MAX_FUTURE_SECONDS:
        raise InvalidOutcome(f"{where}.event_time is in the future "
                             f"({event.event_time.ToJsonString()})")


def event_time(event: outcomes_pb2.OutcomeEvent, received: float) -> float:
    return event.event_time.ToNanoseconds() / 1e9 if event.HasField("event_time") \
        else received


def log_line(event: outcomes_pb2.OutcomeEvent, received: float) -> dict:
    return {"event_id": event.event_id, "type": TYPE_NAMES[event.type],
            "request_id": event.request_id or None, "user_id": event.user_id,
            "item_id": event.item_id,
            "value": event.value if event.type == outcomes_pb2.RATING else 1.0,
            "timestamp": round(event_time(event, received), 3),
            "received": round(received, 3)}


class SeenEvents:
    """Event ids recorded within the last `window_seconds`, oldest first."""

    def __init__(self, window_seconds: float):
        self.window = window_seconds
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._seen

    def add(self, event_id: str, at: float) -> None:
        self._seen[event_id] = at
        self._seen.move_to_end(event_id)

    def expire(self, now: float) -> None:
        while self._seen:
            event_id, at = next(iter(self._seen.items()))
            if at >= now - self.window:
                return
            del self._seen[event_id]

    def load(self, directory: Path, prefix: str, now: float) -> int:
        """The ids the logs in `directory` received within the window, so a restarted
        router still knows what it recorded; returns how many. Reads each file backwards
        from its end and stops at the window's start (its lines are in received order)."""
        cutoff = now - self.window
        found = []
        for path in directory.glob(f"{prefix}-*.jsonl"):
            if path.stat().st_mtime >= cutoff:
                found += _received_since(path, cutoff)
        for at, event_id in sorted(found):
            self.add(event_id, at)
        return len(self._seen)


def _received_since(path: Path, cutoff: float, block: int = 1 << 20) -> list[tuple]:
    """(received, event id) of the lines at the end of `path` received at or after cutoff."""
    found = []
    with path.open("rb") as handle:
        end = handle.seek(0, 2)
        tail = b""
        while end > 0:
            start = max(0, end - block)
            handle.seek(start)
            data = handle.read(end - start) + tail
            lines = data.split(b"\n")
            tail = lines.pop(0) if start > 0 else b""  # may be cut: read with the next block
            for line in reversed(lines):
                try:
                    entry = json.loads(line)
                    at, event_id = float(entry["received"]), str(entry["event_id"])
                except (ValueError, KeyError, TypeError):
                    continue  # empty, or a line cut by a crash (never acknowledged)
                if at < cutoff:
                    return found
                found.append((at, event_id))
            end = start
    return found


@dataclass
class Counts:
    accepted: int = 0
    duplicates: int = 0
    late: int = 0


class OutcomeRecorder:
    """`record` may run in several threads at once (the service calls it off its event
    loop: a full batch takes milliseconds)."""

    def __init__(self, log: ExposureLog, horizon_seconds: float, dedupe_seconds: float,
                 max_batch: int, clock=time.time):
        self.log, self.horizon, self.max_batch, self.clock = log, horizon_seconds, max_batch, clock
        self.seen = SeenEvents(dedupe_seconds)
        self.seen.load(log.directory, log.prefix, clock())
        self._lock = threading.Lock()  # dedupe and append, one batch at a time

    def record(self, request: outcomes_pb2.RecordOutcomesRequest) -> Counts:
        """Raises InvalidOutcome for a malformed batch; nothing of it is recorded then."""
        if not request.events:
            raise InvalidOutcome("events is empty")
        if len(request.events) > self.max_batch:
            raise InvalidOutcome(f"events holds {len(request.events)} events; at most "
                                 f"{self.max_batch} per call")
        now = self.clock()
        for i, event in enumerate(request.events):
            check(event, f"events[{i}]", now)
        counts, results = Counts(), []
        with self._lock:
            self.seen.expire(now)
            lines, batch_ids = [], set()
            for event in request.events:
                if event.event_id in self.seen or event.event_id in batch_ids:
                    counts.duplicates += 1
                    results.append("duplicate")
                elif event_time(event, now) < now - self.horizon:
                    counts.late += 1
                    results.append("late")
                else:
                    lines.append(log_line(event, now))
                    batch_ids.add(event.event_id)
                    counts.accepted += 1
                    results.append("accepted")
            if lines:
                self.log.write_many(lines)  # before the answer: acknowledged = written
                for event_id in batch_ids:
                    self.seen.add(event_id, now)
        for event, result in zip(request.events, results):
            metrics.OUTCOME_EVENTS.labels(TYPE_NAMES[event.type], result).inc()
        return counts
