"""Experimenters change experiments on a running router through the CLI and the admin
API: tokens, re-bucketing guard, audit log, and the change served at once."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import grpc
import pytest
import yaml

from recsys.v1 import recommend_pb2, recommend_pb2_grpc
from tests.conftest import ROOT
from tests.integration.helpers import extra_router
from tools.stack import service_env

ROUTER = "services/router"
EDITOR, VIEWER = "editor-token-1", "viewer-token-1"


@pytest.fixture
def router(stack, tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [
        {"who": "alice", "sha256": hashlib.sha256(EDITOR.encode()).hexdigest()},
        {"who": "vic", "sha256": hashlib.sha256(VIEWER.encode()).hexdigest(),
         "role": "viewer"}]}))
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text((ROOT / "services/router/experiments.yaml").read_text())
    router = extra_router(stack, f"experiments_file={experiments}",
                          f"admin_tokens_file={tokens}",
                          f"experiment_audit_log={tmp_path / 'audit.jsonl'}")
    yield router, tmp_path
    router.stop()


def cli(router, *args, token=EDITOR):
    env = {**service_env(), "RECSYS_ADMIN_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "tools.experiments", "--router",
                           router.address(ROUTER), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def recommend(router, user):
    with grpc.insecure_channel(router.address(ROUTER)) as channel:
        return recommend_pb2_grpc.RecommendServiceStub(channel).Recommend(
            recommend_pb2.RecommendRequest(user_id=user, num_results=5), timeout=10)


def test_experimenter_creates_checks_and_stops_an_experiment(router):
    router, folder = router
    spec = folder / "popular.yaml"
    experiment = {
        "key": "popular_for_qa", "layer": "strategy", "traffic_from": 0, "traffic_to": 1,
        "arms": [{"name": "popular", "weight": 1, "serves": {"candidates": "popular"}}],
        "allowlist": {"7": "popular"}}
    spec.write_text(yaml.safe_dump(experiment))

    assert "UNAUTHENTICATED" in cli(router, "create", str(spec), token="").stderr
    assert "PERMISSION_DENIED" in cli(router, "create", str(spec), token=VIEWER).stderr
    created = cli(router, "create", str(spec))
    assert created.returncode == 0, created.stderr
    version = yaml.safe_load(created.stdout)["config_version"]

    arm = yaml.safe_load(cli(router, "arm", "7").stdout)
    assert arm["config_version"] == version
    assert {"layer": "strategy", "experiment": "popular_for_qa", "arm": "popular"} in \
        arm["assignments"]
    answer = recommend(router, "7")  # served by this replica at once
    assert answer.config_version == version and not answer.fallback
    assert answer.model_versions.retrieval == 0  # popular items, no retrieval model

    experiment["arms"] = [{**experiment["arms"][0], "weight": 2},
                          {"name": "model", "weight": 1, "serves": {"candidates": "model"}}]
    spec.write_text(yaml.safe_dump(experiment))
    refused = cli(router, "update", str(spec))
    assert refused.returncode == 1 and "FAILED_PRECONDITION" in refused.stderr
    assert "--force" in cli(router, "update", "--help").stdout
    assert cli(router, "update", str(spec), "--force").returncode == 0

    stopped = cli(router, "stop", "popular_for_qa")
    assert stopped.returncode == 0, stopped.stderr
    assert recommend(router, "7").model_versions.retrieval > 0  # back to the models

    entries = [json.loads(line) for line in (folder / "audit.jsonl").read_text().splitlines()]
    assert [(e["who"], e["action"]) for e in entries] == [
        ("alice", "create"), ("alice", "update"), ("alice", "stop")]
    assert entries[1]["before"]["arms"][0]["weight"] == 1
    assert entries[1]["after"]["arms"][0]["weight"] == 2


def test_invalid_changes_are_refused_naming_the_field(router):
    router, folder = router
    spec = folder / "bad.yaml"
    spec.write_text(yaml.safe_dump({"key": "bad", "layer": "strategy",
                                    "arms": [{"name": "a", "weight": -1}]}))
    answer = cli(router, "create", str(spec))
    assert answer.returncode == 1
    assert "INVALID_ARGUMENT" in answer.stderr and "field 'weight'" in answer.stderr
    spec.write_text(yaml.safe_dump({"key": "bad", "layr": "strategy"}))
    answer = cli(router, "create", str(spec))
    assert answer.returncode != 0 and "unknown field(s) ['layr']" in answer.stderr
    listed = yaml.safe_load(cli(router, "list").stdout)
    assert [e["key"] for e in listed["experiments"]] == ["two_stage_vs_retrieval_only"]
