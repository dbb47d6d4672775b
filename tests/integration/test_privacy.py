"""A user's data exported and erased everywhere the platform keeps it, through the real
writers (the Beam feature job, Feast on SQLite and on Redis, the stream and its worker,
the router's log writer and outcome publisher, the experiment document); afterwards
every store is searched again, byte by byte where bytes can be searched."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import time

import pandas as pd
import pytest
import redis
import yaml

from libs import deletion_list
from libs.feature_store_config import FeatureStoreConfig, OnlineStore
from libs.feature_stream import publish, redis_client
from pipelines.data import synthetic
from pipelines.data.dataset import Dataset
from pipelines.features import ingest
from pipelines.features.stream import Updater
from pipelines.privacy import retention, user_data
from services.router.experiment_admin import ExperimentDocument
from services.router.exposure_log import ExposureLog
from services.router.outcome_stream import OutcomePublisher
from tests.conftest import ROOT, start_redis
from tests.integration.conftest import build_features
from tests.integration.helpers import extra_router
from tools import redis_server
from tools.stack import service_env

USER = "erase-me-7f3a"  # distinctive, so a byte search finds it wherever it is left
TWIN = "1"  # the user whose profile and ratings USER copies
STREAM = "recsys:events"


def with_user(data: Dataset) -> Dataset:
    profile = data.users[data.users.user_id == TWIN].assign(user_id=USER, zip_code="99999")
    ratings = data.ratings[data.ratings.user_id == TWIN].assign(user_id=USER)
    return Dataset(pd.concat([data.users, profile], ignore_index=True), data.items,
                   pd.concat([data.ratings, ratings], ignore_index=True), data.source)


def exposure(user: str, at: float, n: int) -> dict:
    return {"request_id": f"r-{user}-{n}", "timestamp": at, "user_id": user,
            "items": ["1", "2"], "scores": [0.9, 0.8], "fallback": False}


def outcome(user: str, at: float, n: int) -> dict:
    return {"event_id": f"e-{user}-{n}", "type": "rating", "request_id": f"r-{user}-{n}",
            "user_id": user, "item_id": "3", "value": 4.0, "timestamp": at, "received": at}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A workdir whose every store holds USER, beside other users; a Redis holding the
    stream and a second online store."""
    workdir = tmp_path_factory.mktemp("privacy")
    data = with_user(synthetic.generate(80, 100, 2000))
    build_features(workdir, data)
    address, process = start_redis()
    redis_store = FeatureStoreConfig(online_store=OnlineStore(
        type="redis", connection_string=address))
    ingest.ingest(redis_store, workdir / "redis", tables_dir=workdir / "features" / "tables",
                  progress=None)
    (workdir / "redis.yaml").write_text(yaml.safe_dump(
        {"online_store": {"type": "redis", "connection_string": address}}))
    client = redis_client(address)
    for n in range(3):
        publish(client, STREAM, USER, str(n + 1), 4.0)
        publish(client, STREAM, "2", str(n + 1), 3.0)
    now = time.time()
    exposures = ExposureLog(workdir / "exposures")
    outcomes = ExposureLog(workdir / "outcomes", prefix="outcomes", time_field="received")
    for n in range(3):
        exposures.write_many([exposure(USER, now, n), exposure("2", now, n)])
        outcomes.write_many([outcome(USER, now, n), outcome("2", now, n)])
    publisher = OutcomePublisher(workdir / "outcomes", "outcomes", client, STREAM, 600)
    assert publisher.step() == 6
    # the stream worker: one event applied (the offline event log), one quarantined
    store = ingest.open_store(FeatureStoreConfig(), workdir / "features")
    updater = Updater(store, workdir)
    assert updater.apply([("1700000000000-0", {"user_id": USER, "item_id": "5",
                                                "rating": "5"}),
                          ("1700000000000-1", {"user_id": USER, "item_id": "no-such-item",
                                                "rating": "5"})]) == \
        {"applied": 1, "quarantined": 1, "erased": 0}
    document = ExperimentDocument(workdir / "experiments.yaml",
                                  workdir / "experiments_audit.jsonl")
    (workdir / "experiments.yaml").write_text(
        (ROOT / "services" / "router" / "experiments.yaml").read_text())
    document.create("qa", "qa", {"key": "qa_pins", "salt": "qa", "traffic": [0, 100],
                                 "allowlist": {USER: "b", "2": "a"},
                                 "arms": [{"name": "a", "weight": 50, "serves": {}},
                                          {"name": "b", "weight": 50, "serves": {}}]})
    (workdir / "model_repo" / "ranking" / "7").mkdir(parents=True)
    yield {"workdir": workdir, "data": data, "client": client, "address": address,
           "exposures": exposures, "outcomes": outcomes, "publisher": publisher,
           "updater": updater, "document": document}
    exposures.close()
    outcomes.close()
    redis_server.stop(process)


def config(world, online: str = "") -> user_data.PrivacyConfig:
    return user_data.PrivacyConfig(
        workdir=str(world["workdir"]), stream_redis=world["address"],
        feature_store_config=online or str(ingest.DEFAULT_CONFIG))


def cli(world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / ".venv" / "serving" / "bin" / "python"), "-m",
         "pipelines.privacy.user_data", "--set", f"workdir={world['workdir']}",
         "--set", f"stream_redis={world['address']}", *args],
        cwd=ROOT, env=service_env(), capture_output=True, text=True, timeout=300)


def files_holding(workdir, token: bytes, skip: tuple[str, ...]) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                  if p.is_file() and not str(p.relative_to(workdir)).startswith(skip)
                  and token in p.read_bytes())


def test_export_holds_what_every_store_keeps_about_the_user(world, tmp_path):
    result = cli(world, "export", USER, "--out", str(tmp_path / "export.json"))
    assert result.returncode == 0, result.stderr
    exported = json.loads((tmp_path / "export.json").read_text())
    stores = exported["stores"]
    held = {name for name, records in stores.items() if records}
    assert held == {"online store", "event stream", "outcome dedupe keys", "exposure log",
                    "outcome log", "stream quarantine", "raw users", "raw ratings",
                    "stream event log", "feature tables", "experiment allowlists",
                    "experiment audit log"}, held
    assert [u["zip_code"] for u in stores["raw users"]] == ["99999"]
    twin = (world["data"].ratings.user_id == TWIN).sum()
    assert len(stores["raw ratings"]) == twin
    assert len(stores["event stream"]) == 3 + 3  # published, and the outcomes' ratings
    assert stores["experiment allowlists"] == [{"experiment": "qa_pins", "arm": "b"}]
    assert all(r["user_id"] == USER for r in stores["exposure log"])
    assert exported["trained_on"]["training_sets"]  # the training set built from them


def test_erasure_leaves_nothing_and_nothing_brings_the_user_back(world):
    workdir = world["workdir"]
    exposure_lines = sum(p.read_text().count("\n") for p in (workdir / "exposures").iterdir())

    result = cli(world, "erase", USER, "--ticket", "DSR-1")
    assert result.returncode == 0, result.stderr
    assert "retrain" in result.stdout
    on_redis = cli(world, "--set", f"feature_store_config={workdir / 'redis.yaml'}",
                   "erase", USER, "--ticket", "DSR-1")
    assert on_redis.returncode == 0, on_redis.stderr

    # every store, searched through its own reader
    for online in (str(ingest.DEFAULT_CONFIG), str(workdir / "redis.yaml")):
        assert not any(user_data.find(config(world, online), USER).values())
    # and byte by byte: every file but what the record lists for retraining
    trained_on = ("data/training_sets", "data/examples", "model_repo")
    assert files_holding(workdir, USER.encode(), trained_on) == []
    raw = redis.Redis(*world["address"].split(":"))
    keys = raw.keys("*")
    assert keys and not [k for k in keys if USER.encode() in k]
    assert not [e for e in raw.xrange(STREAM) if USER.encode() in b"".join(e[1].values())]

    # the erasure record: no id, what was erased, what still needs retraining
    records = [json.loads(line) for line in (workdir / "privacy" / "erasures.jsonl")
               .read_text().splitlines()]
    first = records[0]
    assert first["user_sha256"] == deletion_list.digest(USER) and first["ticket"] == "DSR-1"
    assert first["left"] == {} and first["erased"]["raw users"] == 1
    assert first["retrain"]["model_versions"] == ["ranking/7"]
    assert any("training_sets" in s for s in first["retrain"]["training_sets"])
    assert records[1]["erased"]["online store"] > 0  # the Redis one

    # the experiments: the pin gone, the audit log whole, the id masked in it
    assert world["document"].pinned(USER) == {}
    assert world["document"].pinned("2") == {"qa_pins": "a"}
    audit = [json.loads(line) for line in
             (workdir / "experiments_audit.jsonl").read_text().splitlines()]
    assert [a["action"] for a in audit] == ["create", "unpin"]

    # the writers go on: lines keep their places, the publisher its offsets
    world["exposures"].write(exposure("2", time.time(), 9))
    after = [line for p in (workdir / "exposures").iterdir()
             for line in p.read_text().splitlines()]
    assert len(after) == exposure_lines + 1
    assert sum(1 for line in after if line.strip()) == exposure_lines // 2 + 1
    world["outcomes"].write(outcome("2", time.time(), 9))
    assert world["publisher"].step() == 1  # the new one only, nothing unreadable

    # nothing brings the user back: a late stream event, a re-landed upstream copy
    assert world["updater"].apply([("1700000000001-0", {"user_id": USER, "item_id": "5",
                                                        "rating": "4"})])["erased"] == 1
    report = ingest.run_batch_job(workdir, world["data"])  # never lands
    assert not any(user_data.find(config(world), USER).values())
    raw_dir = workdir / "data" / "raw"  # landed by something else (an upstream copy)
    with open(raw_dir / "users.csv", "a") as users:
        users.write(f"{USER},30,F,writer,99999\n")
    with open(raw_dir / "ratings.csv", "a") as ratings:
        ratings.write(f"{USER},5,4,{int(time.time())}\n")
    report = ingest.run_batch_job(workdir)
    assert report["erased"] == {"users": 1, "ratings": 1}
    tables = user_data.PrivacyConfig(workdir=str(workdir))
    assert not [s.name for s in user_data.stores(tables)
                if s.name == "feature tables" and s.export(USER)]


def test_bad_requests_name_what_is_wrong(world):
    for args, message in ((("erase", " ", "--ticket", "x"), "user id"),
                          (("erase", USER, "--ticket", ""), "--ticket"),
                          (("--set", "stream_redis=nohost", "find", USER), "stream_redis"),
                          (("--set", "surprise=1", "find", USER), "surprise")):
        result = cli(world, *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


EDITOR, VIEWER = "editor-token-p", "viewer-token-p"


@pytest.fixture
def privacy_router(world, stack, tmp_path):
    """A router whose every store is the world's, with an editor and a viewer."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [
        {"who": "alice", "sha256": hashlib.sha256(EDITOR.encode()).hexdigest()},
        {"who": "vic", "sha256": hashlib.sha256(VIEWER.encode()).hexdigest(),
         "role": "viewer"}]}))
    workdir = world["workdir"]
    router = extra_router(
        stack, f"admin_tokens_file={tokens}", f"privacy_workdir={workdir}",
        f"feature_store_dir={workdir / 'features'}",
        f"exposure_log_dir={workdir / 'exposures'}", f"shadow_log_dir={workdir / 'shadow'}",
        f"outcome_log_dir={workdir / 'outcomes'}",
        f"experiments_file={workdir / 'experiments.yaml'}",
        f"experiment_audit_log={workdir / 'experiments_audit.jsonl'}",
        f"outcome_stream_redis={world['address']}")
    yield router.address("services/router")
    router.stop()


def through(router: str, token: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / ".venv" / "serving" / "bin" / "python"), "-m",
         "pipelines.privacy.user_data", "--router", router, *args], cwd=ROOT,
        env={**service_env(), "RECSYS_ADMIN_TOKEN": token}, capture_output=True, text=True,
        timeout=300)


def test_an_editor_erases_a_user_through_the_routers_admin_api(world, privacy_router):
    user = "3"
    found = through(privacy_router, EDITOR, "find", user)
    assert found.returncode == 0, found.stderr
    assert "raw ratings" in found.stdout and int(found.stdout.split()[0]) > 0  # online rows
    for token, code in (("", "UNAUTHENTICATED"), ("nope", "UNAUTHENTICATED"),
                        (VIEWER, "PERMISSION_DENIED")):
        refused = through(privacy_router, token, "erase", user, "--ticket", "DSR-2")
        assert refused.returncode == 1 and code in refused.stderr, refused.stderr
    bad = through(privacy_router, EDITOR, "export", " 3")
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "user_id" in bad.stderr

    erased = through(privacy_router, EDITOR, "erase", user, "--ticket", "DSR-2")
    assert erased.returncode == 0, erased.stderr
    record = json.loads((world["workdir"] / "privacy" / "erasures.jsonl")
                        .read_text().splitlines()[-1])
    assert record["who"] == "alice" and record["ticket"] == "DSR-2" and not record["left"]
    assert record["erased"]["raw ratings"] > 0 and record["erased"]["online store"] > 0
    assert not any(user_data.find(config(world), user).values())


def test_retention_deletes_each_store_past_its_time_and_nothing_younger(world):
    workdir, client = world["workdir"], world["client"]
    old_day = "2020-01-01"  # far past every retention
    for directory, prefix in (("exposures", "exposures"), ("outcomes", "outcomes")):
        (workdir / directory / f"{prefix}-{old_day}-host-1.jsonl").write_text("{}\n")
    (workdir / "outcomes" / ".published" / f"outcomes-{old_day}-host-1.jsonl").write_text("3")
    events = workdir / "data" / "raw" / "events"
    events.mkdir(exist_ok=True)
    (events / "1000-0.csv").write_text("user_id,item_id,rating,timestamp\n2,1,4,1\n")
    # as seen 8 days from now: what the stream holds is past its 7 days; one entry is not
    later = time.time() + 8 * 86400
    young = client.xadd(STREAM, {"user_id": "2", "item_id": "1", "rating": 4},
                        id=f"{int(later * 1000) - 1000}-0")
    kept_logs = sorted(p.name for d in ("exposures", "outcomes")
                       for p in (workdir / d).glob(f"*-{time.strftime('%Y-%m-%d')}-*"))
    last_rating = world["data"].ratings.groupby("user_id").timestamp.max()
    # users who rated nothing within 30 days of this "now": about half of them
    now = float(last_rating.median()) + 30 * 86400
    gone = set(last_rating[last_rating < now - 30 * 86400].index) - {USER, "3"}
    rules = retention.Retention(exposure_log=90, shadow_log=30, outcome_log=400,
                                event_stream=7, event_log=30)
    settings = user_data.PrivacyConfig(workdir=str(workdir), stream_redis=world["address"],
                                       retention=rules)
    online = user_data.stores(settings)[0]
    assert sorted(online.inactive(now - 30 * 86400)) == sorted(gone)

    in_stream = client.xlen(STREAM)
    dry = retention.enforce(settings, now=later, dry_run=True, progress=None)
    assert dry["exposure_log"] == dry["outcome_log"] == dry["event_log"] == 1
    assert dry["event_stream"] == in_stream - 1
    assert (events / "1000-0.csv").exists()  # a dry run deletes nothing

    deleted = retention.enforce(settings, now=later, progress=None)
    assert deleted == dry
    assert not list(workdir.rglob(f"*{old_day}*")) and not (events / "1000-0.csv").exists()
    assert sorted(p.name for d in ("exposures", "outcomes")
                  for p in (workdir / d).glob(f"*-{time.strftime('%Y-%m-%d')}-*")) == kept_logs
    assert [e for e, _ in client.xrange(STREAM)] == [young]
    # inactive users' online rows, the rest untouched
    settings.retention = dataclasses.replace(rules, online_inactive_users=30)
    assert retention.enforce(settings, now=now, progress=None)[
        "online_inactive_users"] == len(gone)
    still = {u: bool(online.export(u)) for u in last_rating.index if u not in (USER, "3")}
    assert {u for u, held in still.items() if not held} == gone
