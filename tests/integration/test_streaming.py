"""Rating events on a Redis Stream reach the online features within seconds, land in the
offline log the next batch run reads, and bad events are quarantined, not applied; a
rating reported to the router's OutcomeService reaches them once."""
from __future__ import annotations

import subprocess
import sys

import grpc
import pandas as pd
import pytest
import yaml

from libs import feature_stream
from libs.feature_store_config import FeatureStoreConfig, OnlineStore
from pipelines.data import synthetic
from pipelines.features import ingest
from recsys.v1 import outcomes_pb2, outcomes_pb2_grpc
from tests.conftest import ROOT
from tests.integration.helpers import WorkerProcess, extra_router, wait_for
from tools.stack import service_env

DATA = synthetic.generate(120, 200, 3000, seed=21)
USER = DATA.ratings.user_id.value_counts().index[0]
NEW_ITEM = next(i for i in DATA.items.item_id
                if i not in set(DATA.ratings[DATA.ratings.user_id == USER].item_id))


@pytest.fixture
def online(tmp_path, redis_server):
    """Features of DATA in a Redis online store; the stream lives in the same Redis."""
    ingest.run_batch_job(tmp_path, DATA)
    config = FeatureStoreConfig(project=f"s{tmp_path.name[-20:].replace('-', '_')}",
                                online_store=OnlineStore(type="redis",
                                                         connection_string=redis_server))
    store = ingest.ingest(config, tmp_path, progress=None)
    config_file = tmp_path / "store.yaml"
    config_file.write_text(yaml.safe_dump({
        "project": config.project,
        "online_store": {"type": "redis", "connection_string": redis_server}}))
    return store, config_file


@pytest.fixture
def worker(tmp_path, redis_server, online):
    process = WorkerProcess(tmp_path, redis_server, online[1]).start()
    yield process
    process.stop()


def user_state(store, user_id=USER, item_id=NEW_ITEM) -> dict:
    return store.get_online_features(
        features=["user_activity:user_rating_count", "user_activity:recent_items",
                  "user_rated_items:rated_items", "item_popularity:item_rating_count"],
        entity_rows=[{"user_id": user_id, "item_id": item_id}]).to_dict()


def test_a_rating_event_updates_online_features_and_the_offline_log(tmp_path, online,
                                                                    worker, redis_server):
    store, _ = online
    before = user_state(store)
    client = feature_stream.redis_client(redis_server)
    feature_stream.publish(client, worker.stream, USER, NEW_ITEM, 5)
    # three views, three pushes: wait until all show it
    after = wait_for(lambda: (state := user_state(store))["user_rating_count"][0]
                     == before["user_rating_count"][0] + 1
                     and NEW_ITEM in state["rated_items"][0]
                     and state["item_rating_count"][0]
                     == (before["item_rating_count"][0] or 0) + 1 and state)
    assert after["recent_items"][0][0] == NEW_ITEM

    # the offline log holds it (written after the pushes), and the next batch run counts it
    logs = wait_for(lambda: list((tmp_path / "data" / "raw" / "events").glob("*.csv")))
    logged = pd.concat(pd.read_csv(p, dtype=str) for p in logs)
    assert logged[["user_id", "item_id", "rating"]].values.tolist() == [
        [USER, NEW_ITEM, "5.0"]]
    ingest.run_batch_job(tmp_path)
    activity = pd.read_parquet(tmp_path / "features" / "tables" / "user_activity")
    assert activity[activity.user_id == USER].user_rating_count.max() == \
        before["user_rating_count"][0] + 1


def test_bad_events_are_quarantined_and_the_worker_goes_on(tmp_path, online, worker,
                                                          redis_server):
    store, _ = online
    before = user_state(store)["user_rating_count"][0]
    client = feature_stream.redis_client(redis_server)
    feature_stream.publish(client, worker.stream, "nobody", NEW_ITEM, 4)
    feature_stream.publish(client, worker.stream, USER, NEW_ITEM, 9)
    client.xadd(worker.stream, {"user_id": USER})
    feature_stream.publish(client, worker.stream, USER, NEW_ITEM, 3)
    wait_for(lambda: user_state(store)["user_rating_count"][0] == before + 1)
    # counted once the batch is through (the push comes first)
    wait_for(lambda: worker.metric("applied") == 1)
    assert worker.metric("quarantined") == 3
    reasons = (tmp_path / "features" / "stream_quarantine" / "events.jsonl").read_text()
    assert "unknown user_id 'nobody'" in reasons and "outside 1..5" in reasons


def test_events_sent_while_the_worker_is_down_are_applied_when_it_returns(
        tmp_path, online, worker, redis_server):
    store, _ = online
    before = user_state(store)["user_rating_count"][0]
    client = feature_stream.redis_client(redis_server)
    feature_stream.publish(client, worker.stream, USER, NEW_ITEM, 4)
    wait_for(lambda: user_state(store)["user_rating_count"][0] == before + 1)
    worker.stop()
    for item in DATA.items.item_id[:3]:
        feature_stream.publish(client, worker.stream, USER, item, 2)
    worker.start()
    wait_for(lambda: user_state(store)["user_rating_count"][0] == before + 4)


def test_a_rating_reported_to_the_router_moves_online_features_once(
        tmp_path, online, worker, redis_server, stack):
    store, _ = online
    before = user_state(store)["user_rating_count"][0]
    router = extra_router(stack, f"outcome_log_dir={tmp_path / 'outcomes'}",
                          f"outcome_stream_redis={redis_server}",
                          f"outcome_stream={worker.stream}", "outcome_publish_seconds=0.1")
    request = outcomes_pb2.RecordOutcomesRequest(events=[
        outcomes_pb2.OutcomeEvent(event_id=f"{tmp_path.name}-1", user_id=USER,
                                  item_id=NEW_ITEM, type=outcomes_pb2.RATING, value=5),
        outcomes_pb2.OutcomeEvent(event_id=f"{tmp_path.name}-2", user_id=USER,
                                  item_id=NEW_ITEM, type=outcomes_pb2.CLICK)])
    try:
        with grpc.insecure_channel(router.address("services/router")) as channel:
            stub = outcomes_pb2_grpc.OutcomeServiceStub(channel)
            assert stub.RecordOutcomes(request, timeout=10).accepted == 2
            # the worker pushes user_activity, then user_rated_items: wait for both
            wait_for(lambda: (s := user_state(store))["user_rating_count"][0] == before + 1
                     and NEW_ITEM in s["rated_items"][0])
            assert stub.RecordOutcomes(request, timeout=10).duplicates == 2  # a retry
    finally:
        router.stop()
    # only the rating is a feature event, and it is there once
    assert [f["rating"] for _, f in feature_stream.redis_client(redis_server).xrange(
        worker.stream)] == ["5.0"]
    assert user_state(store)["user_rating_count"][0] == before + 1


def test_a_bad_config_is_refused_naming_the_field(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipelines.features.stream", "--set",
                             "redis=nohost", "--set", "batch_sise=3"], cwd=ROOT,
                            env=service_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "batch_sise" in result.stderr
    assert "Traceback" not in result.stderr
