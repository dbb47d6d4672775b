"""The services read features from Feast; a feature store outage degrades, never fails;
a rating streamed in changes what the user is recommended, and an item many users rate
becomes a trending candidate."""
from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import grpc
import pytest
import yaml

from libs import feature_stream, trends
from libs.feature_store_config import FeatureStoreConfig, OnlineStore
from pipelines.features import ingest
from recsys.v1 import candidate_pb2, candidate_pb2_grpc, recommend_pb2
from tests.conftest import start_redis
from tests.integration.helpers import WorkerProcess, user_in_arm, wait_for
from tools import build_manifest

Request = recommend_pb2.RecommendRequest
FEATURE_CLIENTS = ("services/candidate", "services/ranking")


@pytest.fixture
def services_on_redis(trained, stack, tmp_path):
    """Candidate and ranking restarted on a Redis online store; restored afterwards."""
    workdir, _ = trained
    address, redis_process = start_redis()
    config = FeatureStoreConfig(online_store=OnlineStore(type="redis",
                                                         connection_string=address))
    # a store of its own: the registry records what was materialized, per store
    ingest.ingest(config, tmp_path, tables_dir=workdir / "features" / "tables",
                  progress=None)
    config_file = tmp_path / "redis.yaml"
    config_file.write_text(yaml.safe_dump({"online_store": {
        "type": "redis", "connection_string": address}}))
    targets = build_manifest.load()
    saved = {name: list(stack.extra.get(name, [])) for name in FEATURE_CLIENTS}

    def restart():
        for name in FEATURE_CLIENTS:
            stack.stop_service(name)
            stack.start_service(targets[name])
    try:
        for name in FEATURE_CLIENTS:
            stack.extra[name] = saved[name] + [f"feature_store_config={config_file}",
                                               f"feature_store_dir={tmp_path / 'features'}"]
        stack.extra["services/candidate"].append("trends_refresh_seconds=1")
        restart()
        yield SimpleNamespace(process=redis_process, address=address,
                              config_file=config_file, workdir=tmp_path)
    finally:
        if redis_process.poll() is None:
            redis_process.terminate()
            redis_process.wait(10)
        stack.extra.update(saved)
        restart()


def test_answers_come_from_feast_features(recommend):
    response = recommend.Recommend(Request(user_id=user_in_arm("two_stage"), num_results=5),
                                   timeout=10)
    assert not response.fallback and not response.features_degraded
    assert len(response.items) == 5


def test_redis_stopped_mid_run_degrades_to_defaults_without_errors(services_on_redis,
                                                                   recommend):
    user = user_in_arm("two_stage")
    # a freshly restarted ranking service may miss the first deadline (a fallback): the
    # outage is judged from a model-served answer
    before = wait_for(lambda: (answer := recommend.Recommend(
        Request(user_id=user, num_results=5), timeout=10)) and not answer.fallback and answer)
    assert not before.features_degraded
    services_on_redis.process.terminate()
    services_on_redis.process.wait(10)
    after = recommend.Recommend(Request(user_id=user, num_results=5), timeout=10)
    assert after.features_degraded, "a feature store outage must be flagged"
    assert len(after.items) == 5 and after.model_versions.ranking > 0


def test_a_streamed_rating_leaves_the_users_recommendations_within_seconds(
        services_on_redis, recommend):
    redis = services_on_redis
    user = user_in_arm("two_stage")
    recommended = lambda: [i.item_id for i in recommend.Recommend(  # noqa: E731
        Request(user_id=user, num_results=10), timeout=10).items]
    top = recommended()[0]
    worker = WorkerProcess(redis.workdir, redis.address, redis.config_file).start()
    try:
        feature_stream.publish(feature_stream.redis_client(redis.address), worker.stream,
                               user, top, 5)
        # the candidate service excludes what the user has rated (Feast's query features)
        wait_for(lambda: top not in recommended(), seconds=30)
    finally:
        worker.stop()


def test_an_item_many_users_rate_now_becomes_a_trending_candidate_within_seconds(
        services_on_redis, trained, stack):
    redis, (workdir, _) = services_on_redis, trained
    summary = json.loads((redis.workdir / "features" / "serving_summary.json").read_text())
    month = trends.WINDOWS.index(30)
    item = min((i for i, row in summary["item_trends"].items() if row[month] == 0),
               key=lambda i: summary["item_trends"][i][-2])
    with open(workdir / "data" / "raw" / "ratings.csv", newline="") as f:
        raters = {r["user_id"] for r in csv.DictReader(f) if r["item_id"] == item}
    users = [str(u) for u in range(1, 301) if str(u) not in raters]
    asking, rating = users[0], users[1:41]
    channel = grpc.insecure_channel(stack.address("services/candidate"))
    stub = candidate_pb2_grpc.CandidateServiceStub(channel)

    def trending():
        return {c.item_id: c.source for c in stub.GetCandidates(
            candidate_pb2.CandidateRequest(user_id=asking, num_candidates=200,
                                           sources=["trending"]), timeout=10).items}
    worker = WorkerProcess(redis.workdir, redis.address, redis.config_file).start()
    try:
        assert item not in trending(), "an item nobody rated this month is not trending"
        client = feature_stream.redis_client(redis.address)
        # an hour after the newest rating the batch run saw: the rest keep their windows
        for user in rating:
            feature_stream.publish(client, worker.stream, user, item, 5,
                                   summary["trends_as_of"] + 3600)
        found = wait_for(lambda: trending().get(item), seconds=30)
        assert found == "trending"
    finally:
        worker.stop()
        channel.close()
