"""Outcome events: checked with errors naming the field, recorded once per event id (also
across a restart), late ones refused, ratings published to a real Redis stream once."""
from __future__ import annotations

import json
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from libs import feature_stream
from recsys.v1 import outcomes_pb2
from services.router import outcomes
from services.router.exposure_log import ExposureLog
from services.router.outcome_stream import OutcomePublisher

NOW = float(int(time.time()))  # the logs' files are read back by their modification time
HOUR = 3600


def event(event_id="e1", type=outcomes_pb2.CLICK, value=0.0, at=None, **fields):
    e = outcomes_pb2.OutcomeEvent(event_id=event_id, user_id=fields.pop("user_id", "7"),
                                  item_id=fields.pop("item_id", "42"), type=type,
                                  value=value, **fields)
    if at is not None:
        e.event_time.FromNanoseconds(int(at * 1e9))
    return e


def batch(*events):
    return outcomes_pb2.RecordOutcomesRequest(events=list(events))


class Clock:
    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now


def recorder(directory, clock=None, horizon=7 * 24 * HOUR, dedupe=600, max_batch=100):
    log = ExposureLog(directory, fsync_seconds=60, prefix="outcomes", time_field="received")
    return outcomes.OutcomeRecorder(log, horizon, dedupe, max_batch, clock or Clock())


def logged(directory) -> list[dict]:
    return [json.loads(line) for path in sorted(directory.glob("outcomes-*.jsonl"))
            for line in path.read_text().splitlines()]


@pytest.mark.parametrize("bad, words", [
    (event(event_id=""), "events[1].event_id is empty"),
    (event(user_id=" "), "events[1].user_id is empty"),
    (event(item_id=""), "events[1].item_id is empty"),
    (event(event_id="x" * 300), "events[1].event_id is longer than 256 characters"),
    (event(type=outcomes_pb2.OUTCOME_TYPE_UNSPECIFIED),
     "events[1].type must be one of IMPRESSION, CLICK, PLAY, RATING, got 0"),
    (event(type=outcomes_pb2.RATING, value=0), "events[1].value must be a rating in 1..5"),
    (event(type=outcomes_pb2.RATING, value=5.5), "events[1].value must be a rating in 1..5"),
    (event(value=1), "events[1].value is only for RATING events; leave it 0 for CLICK"),
    (event(at=NOW + HOUR), "events[1].event_time is in the future"),
])
def test_a_malformed_event_refuses_the_batch_naming_its_field(tmp_path, bad, words):
    with pytest.raises(outcomes.InvalidOutcome, match=words.replace("[", r"\[").replace(
            "]", r"\]").replace(".", r"\.")):
        recorder(tmp_path).record(batch(event("ok"), bad))
    assert logged(tmp_path) == []  # not even the good event of the batch


def test_empty_and_oversized_batches_are_refused(tmp_path):
    with pytest.raises(outcomes.InvalidOutcome, match="events is empty"):
        recorder(tmp_path).record(batch())
    with pytest.raises(outcomes.InvalidOutcome, match="events holds 3 events; at most 2"):
        recorder(tmp_path, max_batch=2).record(
            batch(*(event(f"e{i}") for i in range(3))))


def test_events_are_logged_as_the_analysis_reads_them(tmp_path):
    counts = recorder(tmp_path).record(batch(
        event("a", outcomes_pb2.RATING, 4.5, at=NOW - 60, request_id="r1"),
        event("b", outcomes_pb2.PLAY),
        event("c", outcomes_pb2.IMPRESSION, item_id="43")))
    assert (counts.accepted, counts.duplicates, counts.late) == (3, 0, 0)
    a, b, c = logged(tmp_path)
    assert a == {"event_id": "a", "type": "rating", "request_id": "r1", "user_id": "7",
                 "item_id": "42", "value": 4.5, "timestamp": NOW - 60, "received": NOW}
    assert (b["type"], b["value"], b["timestamp"], b["request_id"]) == ("play", 1.0, NOW, None)
    assert (c["type"], c["item_id"]) == ("impression", "43")
    from pipelines.experiments import exposures
    frame = exposures.read_outcomes(tmp_path)  # engagements: not the impression
    assert list(frame.type) == ["rating", "play"] and list(frame.value) == [4.5, 1.0]
    assert frame.request_id[0] == "r1" and frame.event_id[0] == "a"
    assert len(exposures.read_outcomes(tmp_path, exposures.OUTCOME_TYPES)) == 3


def test_a_retried_event_is_a_duplicate_also_after_a_restart(tmp_path):
    clock = Clock()
    first = recorder(tmp_path, clock)
    assert first.record(batch(event("a"), event("a"), event("b"))).duplicates == 1
    clock.now += 60
    assert first.record(batch(event("a"), event("c"))).duplicates == 1
    restarted = recorder(tmp_path, clock)  # reads back what the logs received
    counts = restarted.record(batch(event("a"), event("b"), event("c"), event("d")))
    assert (counts.accepted, counts.duplicates) == (1, 3)
    assert sorted(e["event_id"] for e in logged(tmp_path)) == ["a", "b", "c", "d"]


def test_the_dedupe_window_forgets_old_ids(tmp_path):
    clock = Clock()
    outcome_recorder = recorder(tmp_path, clock, dedupe=600)
    outcome_recorder.record(batch(event("a")))
    clock.now += 601
    assert outcome_recorder.record(batch(event("a"))).accepted == 1
    clock.now += 601
    assert len(recorder(tmp_path, clock, dedupe=600).seen._seen) == 0


def test_late_events_are_counted_and_not_recorded(tmp_path):
    counts = recorder(tmp_path, horizon=24 * HOUR).record(batch(
        event("old", at=NOW - 25 * HOUR), event("fine", at=NOW - 23 * HOUR)))
    assert (counts.accepted, counts.late) == (1, 1)
    assert [e["event_id"] for e in logged(tmp_path)] == ["fine"]


def test_reading_back_stops_at_the_window_and_skips_a_line_cut_by_a_crash(tmp_path):
    path = tmp_path / "outcomes-2026-12-07-host-1.jsonl"
    lines = [json.dumps({"event_id": f"e{i}", "received": NOW - 1000 + i}) for i in range(1000)]
    path.write_text("\n".join(lines[:500]) + '\n{"event_id": "cut", "rece' + "\n".join(
        lines[500:]) + "\n")
    found = outcomes._received_since(path, NOW - 100, block=64)  # lines cross blocks
    assert sorted(event_id for _, event_id in found) == [f"e{i}" for i in range(900, 1000)]


@pytest.fixture
def stream(redis_server, tmp_path):
    client = feature_stream.redis_client(redis_server)
    name = f"test:{tmp_path.name}"
    yield client, name
    client.delete(name)


def entries(client, name) -> list[dict]:
    return [fields for _, fields in client.xrange(name)]


def test_ratings_are_published_to_the_feature_stream_once(tmp_path, stream):
    client, name = stream
    clock = Clock(time.time())
    outcome_recorder = recorder(tmp_path, clock)
    outcome_recorder.record(batch(
        event(f"{name}-r1", outcomes_pb2.RATING, 4, at=clock.now - 30),
        event(f"{name}-c1", outcomes_pb2.CLICK)))
    publisher = OutcomePublisher(tmp_path, "outcomes", client, name, key_ttl_seconds=600)
    assert publisher.step() == 1
    assert entries(client, name) == [{"user_id": "7", "item_id": "42", "rating": "4.0",
                                      "timestamp": str(int(clock.now - 30))}]
    assert publisher.step() == 0 and publisher.lag_seconds(time.time()) == 0
    # killed mid-write; restarted with the same pid (a container's pid 1), it appends to
    # the same file
    outcome_recorder.log.close()
    with next(tmp_path.glob("outcomes-*.jsonl")).open("a") as handle:
        handle.write('{"event_id": "cut", "ty')
    recorder(tmp_path, clock).record(batch(event(f"{name}-r2", outcomes_pb2.RATING, 2)))
    assert publisher.step() == 1
    # a second router on the same volume, its checkpoints lost: nothing is added twice
    for checkpoint in (tmp_path / ".published").iterdir():
        checkpoint.unlink()
    assert OutcomePublisher(tmp_path, "outcomes", client, name, 600).step() == 0
    assert [e["rating"] for e in entries(client, name)] == ["4.0", "2.0"]


def test_ratings_recorded_while_redis_is_down_are_published_when_it_is_back(tmp_path,
                                                                            stream):
    client, name = stream
    recorder(tmp_path, Clock(time.time())).record(batch(
        event(f"{name}-r1", outcomes_pb2.RATING, 5)))
    down = redis.Redis(port=1, retry=Retry(NoBackoff(), 0))  # nothing listens there
    with pytest.raises(redis.ConnectionError):
        OutcomePublisher(tmp_path, "outcomes", down, name, 600).step()
    waiting = OutcomePublisher(tmp_path, "outcomes", down, name, 600)
    assert 50 < waiting.lag_seconds(time.time() + 60) < 70
    assert OutcomePublisher(tmp_path, "outcomes", client, name, 600).step() == 1
    assert [e["rating"] for e in entries(client, name)] == ["5.0"]
