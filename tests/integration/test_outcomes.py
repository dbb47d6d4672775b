"""Outcome events through the router's gRPC API: none of 10,000 lost or recorded twice
across a kill of the router mid-stream; bad events answered INVALID_ARGUMENT; a router
without an outcome log says so."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import grpc
import pytest

from recsys.v1 import outcomes_pb2, outcomes_pb2_grpc
from tests.integration.helpers import extra_router, wait_for

ROUTER = "services/router"
EVENTS, BATCH = 10_000, 100


def events(start: int, count: int) -> list[outcomes_pb2.OutcomeEvent]:
    return [outcomes_pb2.OutcomeEvent(
        event_id=f"ev-{i}", user_id=str(i % 300 + 1), item_id=str(i % 500 + 1),
        type=outcomes_pb2.RATING if i % 5 == 0 else outcomes_pb2.CLICK,
        value=4.0 if i % 5 == 0 else 0.0) for i in range(start, start + count)]


def logged_ids(directory) -> list[str]:
    ids = []
    for path in directory.glob("outcomes-*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                ids.append(json.loads(line)["event_id"])
            except ValueError:
                pass  # a line cut by the kill: never acknowledged
    return ids


def test_no_event_is_lost_or_doubled_across_a_kill_of_the_router(stack, tmp_path):
    directory = tmp_path / "outcomes"
    settings = (f"outcome_log_dir={directory}", "exposure_fsync_seconds=60")
    routers = [extra_router(stack, *settings)]
    acknowledged, answers = [0], []

    def send():  # a product service: each batch retried until a router acknowledges it
        for start in range(0, EVENTS, BATCH):
            request = outcomes_pb2.RecordOutcomesRequest(events=events(start, BATCH))
            while True:
                try:
                    with grpc.insecure_channel(routers[-1].address(ROUTER)) as channel:
                        answers.append(outcomes_pb2_grpc.OutcomeServiceStub(
                            channel).RecordOutcomes(request, timeout=5))
                    acknowledged[0] += BATCH
                    break
                except grpc.RpcError:
                    time.sleep(0.05)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        wait_for(lambda: acknowledged[0] >= EVENTS // 3, seconds=120)
        # no shutdown hook runs: only what reached the OS survives
        os.killpg(routers[0].processes[ROUTER].popen.pid, signal.SIGKILL)
        routers[0].stop()
        routers.append(extra_router(stack, *settings))
        sender.join(300)
        assert not sender.is_alive()
        ids = logged_ids(directory)
        assert len(ids) == len(set(ids)) == EVENTS
        assert sum(a.accepted for a in answers) + sum(a.duplicates for a in answers) == EVENTS

        with grpc.insecure_channel(routers[-1].address(ROUTER)) as channel:
            stub = outcomes_pb2_grpc.OutcomeServiceStub(channel)
            again = stub.RecordOutcomes(outcomes_pb2.RecordOutcomesRequest(
                events=events(0, BATCH)), timeout=5)
            assert (again.accepted, again.duplicates) == (0, BATCH)
            bad = outcomes_pb2.RecordOutcomesRequest(events=events(EVENTS, 2))
            bad.events[1].value = 9
            with pytest.raises(grpc.RpcError) as refused:
                stub.RecordOutcomes(bad, timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "events[1].value" in refused.value.details()
        assert len(logged_ids(directory)) == EVENTS
    finally:
        for router in routers:
            router.stop()


def test_a_router_without_an_outcome_log_refuses_with_the_reason(stack):
    router = extra_router(stack, "outcome_log_dir=")
    try:
        with grpc.insecure_channel(router.address(ROUTER)) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                outcomes_pb2_grpc.OutcomeServiceStub(channel).RecordOutcomes(
                    outcomes_pb2.RecordOutcomesRequest(events=events(0, 1)), timeout=5)
    finally:
        router.stop()
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "outcome_log_dir is empty" in refused.value.details()
