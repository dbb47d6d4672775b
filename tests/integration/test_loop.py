"""The loop on the real stack, unattended: users report ratings through the router, their
taste shifts to a handful of items nobody rated before, the stream lands the ratings, the
drift check finds the shift in what landed, and the loop's controller retrains on it
(feature job, training set, pipeline), canaries the pushed versions on outcomes and
promotes them; the lineage CLI says which drift report caused which version."""
from __future__ import annotations

import json
import random
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pandas as pd
import pytest
import yaml

from libs.feature_store_config import FeatureStoreConfig, OnlineStore
from pipelines.features import ingest
from pipelines.monitoring import check
from recsys.v1 import outcomes_pb2, outcomes_pb2_grpc
from tests.conftest import ROOT, start_redis
from tests.integration.conftest import SMALL_RUN
from tests.integration.helpers import (MODEL_SERVER, ROUTER, WorkerProcess, lineage,
                                       models_config, rollout_stack, traffic, wait_for)
from tools import redis_server
from tools.stack import service_env

TOKEN = "loop-token"
SHIFTED, USERS, EACH = 20, range(1, 201), 6  # items taking off, who rates them, how many


@pytest.fixture
def world(trained, tmp_path):
    """A copy of the suite's trained workdir, its features in a Redis that also carries
    the stream, a stack of its own whose router publishes reported ratings there, and the
    stream worker landing them in the workdir's raw data (as the CronJobs read it)."""
    workdir = tmp_path / "work"
    shutil.copytree(trained[0], workdir, symlinks=True)
    address, redis = start_redis()
    config_file = tmp_path / "redis.yaml"
    config_file.write_text(yaml.safe_dump({"online_store": {
        "type": "redis", "connection_string": address}}))
    ingest.ingest(FeatureStoreConfig(online_store=OnlineStore(
        type="redis", connection_string=address)), workdir, progress=None)
    worker = WorkerProcess(workdir, address, config_file).start()
    features = [f"feature_store_config={config_file}"]
    stack = None
    try:
        stack = rollout_stack(
            workdir, tmp_path, models_config(workdir / "model_repo", dict.fromkeys(
                ("retrieval", "ranking"), "latest { num_versions: 2 }")),
            (ROOT / "services/router/experiments.yaml").read_text(), TOKEN,
            extra={"services/candidate": features, "services/ranking": features,
                   ROUTER: [f"outcome_stream_redis={address}",
                            f"outcome_stream={worker.stream}",
                            "outcome_publish_seconds=0.2"]})
        yield stack, workdir, config_file
    finally:
        if stack:
            stack.stop()
        worker.stop()
        redis_server.stop(redis)


def taste_shift(stack, workdir) -> list[str]:
    """USERS each rate EACH of the SHIFTED least-rated items 5, through RecordOutcomes;
    returns the items."""
    summary = json.loads((workdir / "features" / "serving_summary.json").read_text())
    items = sorted(summary["item_trends"], key=lambda i: summary["item_trends"][i][-2])
    shifted = items[:SHIFTED]
    rng = random.Random(7)
    with grpc.insecure_channel(stack.address(ROUTER)) as channel:
        stub = outcomes_pb2_grpc.OutcomeServiceStub(channel)
        for user in USERS:
            answer = stub.RecordOutcomes(outcomes_pb2.RecordOutcomesRequest(events=[
                outcomes_pb2.OutcomeEvent(event_id=uuid.uuid4().hex, user_id=str(user),
                                          item_id=item, type=outcomes_pb2.RATING, value=5)
                for item in rng.sample(shifted, EACH)]), timeout=10)
            assert answer.accepted == EACH
    return shifted


def landed(workdir) -> int:
    events = workdir / "data" / "raw" / "events"
    return sum(len(pd.read_csv(f)) for f in events.glob("*.csv")) if events.exists() else 0


def tick(stack, workdir, folder, drift, config_file):
    """One step of the loop's controller, a process of its own as the CronJob runs it;
    its retraining is the default one (features, training set, pipeline), small."""
    retrain = [sys.executable, "-m", "pipelines.loop.retrain", "--workdir", str(workdir),
               "--config", str(config_file), *[a for o in SMALL_RUN for a in ("--set", o)]]
    return subprocess.run(
        [sys.executable, "-m", "pipelines.loop.controller", "--dir", str(folder / "loop"),
         "tick", "--workdir", str(workdir), "--drift-report", str(drift),
         "--retrain-days", "0", "--retrain-command", shlex.join(retrain),
         "--router", stack.address(ROUTER), "--model-server", stack.address(MODEL_SERVER),
         "--exposures", str(folder / "exposures"), "--outcomes", str(folder / "outcomes"),
         "--canary-steps", "20,50", "--canary-step-seconds", "4",
         "--canary-min-requests", "20", "--canary-margin", "0.5",
         # a version loaded a moment ago on a shared two-core machine: its first calls
         # are slow (1.7x stable's p99 in one CI run), not a regression
         "--canary-max-p99-ratio", "3"],
        cwd=ROOT, env={**service_env(), "RECSYS_ADMIN_TOKEN": TOKEN,
                       "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True, text=True, timeout=900)


def test_a_taste_shift_reported_through_the_router_is_retrained_on_and_promoted(
        world, tmp_path):
    stack, workdir, config_file = world
    shifted = taste_shift(stack, workdir)
    ratings = len(USERS) * EACH
    wait_for(lambda: landed(workdir) == ratings, 60)

    # the drift check as its CronJob runs it, on what landed against the served set
    report = tmp_path / "drift"
    code = check.main(["--workdir", str(workdir), "--checks", "features,label",
                       "--until", "latest", "--out", str(report)])
    drift = json.loads((report / "drift.json").read_text())
    found = {r["feature"] for r in drift["results"] if r["detected"]}
    assert code == 1 and found, drift["results"]
    print(f"drift check on the landed ratings: drift in {sorted(found)}")

    def step() -> list[dict]:
        done = tick(stack, workdir, tmp_path, report / "drift.json", config_file)
        log = tmp_path / "loop" / "retrain.log"
        assert done.returncode == 0, done.stdout + done.stderr + (
            log.read_text()[-3000:] if log.exists() else "")
        return [json.loads(line) for line in
                (tmp_path / "loop" / "audit.jsonl").read_text().splitlines()]

    steps = step()  # the retraining: no traffic yet, the machine has two cores
    deadline = time.time() + 240
    with traffic(stack):  # users click what they are shown while the canary runs
        while time.time() < deadline and not any(
                s["action"] == "canary decided" for s in steps):
            time.sleep(0.5)
            steps = step()
    actions = [s["action"] for s in steps]
    assert "retrain" in actions and "retrained" in actions, actions
    [retrained] = [s for s in steps if s["action"] == "retrained"]
    # the new training set holds what the users reported
    training = pd.concat(pd.read_parquet(f) for f in
                         Path(retrained["training_set"]).rglob("*.parquet"))
    assert training.item_id.astype(str).isin(shifted).sum() >= ratings
    [decided] = [s for s in steps if s["action"] == "canary decided"]
    print(f"loop on the real stack: {decided['outcome']} after {decided['seconds']} s: "
          f"{decided['reasons']}")
    assert decided["outcome"] == "promoted", decided
    assert decided["candidate"] == retrained["pushed"]

    # the gates may refuse one of the small models (a slice's RMSE): ask about one pushed
    model = "ranking" if "ranking" in retrained["pushed"] else "retrieval"
    found = lineage(workdir, "model", model, str(retrained["pushed"][model]),
                    "--loop-dir", str(tmp_path / "loop"))
    assert found.returncode == 0, found.stderr[-2000:]
    why = json.loads(found.stdout)["retrained_by_loop"]
    [trigger] = why["triggers"]
    assert trigger["kind"] == "drift" and trigger["report"] == str(report / "drift.json")
    assert trigger["detected_at"] <= why["started"]
    assert why["training_set"] == retrained["training_set"]
