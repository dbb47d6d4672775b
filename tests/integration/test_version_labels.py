"""A rollout by version labels on real processes: models.config says stable -> v1 and
canary -> v2, the router's experiment sends a share of users to the canary label, then
`tools.model_labels promote ranking` moves stable to v2 and the model server, re-reading
the file, serves it to everyone, while clients call without one failed request."""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading

import grpc
import pytest
import yaml

from recsys.v1 import recommend_pb2, recommend_pb2_grpc
from tests.conftest import ROOT
from tests.integration.helpers import (ROUTER, loaded_versions, models_config, rollout_stack,
                                       wait_for)
from tools.stack import service_env

USERS = [str(u) for u in range(1, 41)]
EXPERIMENTS = {
    "version": "labels-1",
    "defaults": {"num_candidates": 100, "rank": True, "ranking_version_label": "stable"},
    "layers": [{"name": "rollout", "experiments": [{
        "key": "ranking-canary", "traffic": [0, 60],
        "arms": [{"name": "canary", "weight": 50,
                  "serves": {"ranking_version_label": "canary"}},
                 {"name": "control", "weight": 50, "serves": {}}]}]}]}


@pytest.fixture(scope="module")
def labelled(trained, tmp_path_factory):
    """Two copies of the pipeline's ranking model as v1 and v2, stable -> v1 and
    canary -> v2 with both loaded (a specific policy), under a stack of its own."""
    workdir, summary = trained
    folder = tmp_path_factory.mktemp("labels")
    repo = workdir / "model_repo"
    pushed = repo / "ranking" / str(summary["ranking"]["serving_version"])
    v1 = max(int(p.name) for p in (repo / "ranking").iterdir() if p.name.isdigit()) + 1
    v2 = v1 + 1
    for version in (v1, v2):
        shutil.copytree(pushed, repo / "ranking" / str(version))
    models = models_config(
        repo, {"retrieval": "latest { num_versions: 1 }",
               "ranking": f"specific {{ versions: {v1} versions: {v2} }}"},
        {"ranking": {"stable": v1, "canary": v2}})
    stack = rollout_stack(workdir, folder, models, yaml.safe_dump(EXPERIMENTS), "unused",
                          model_server=("poll_seconds=0.2",))
    try:
        yield stack, folder / "models.config", v1, v2
    finally:
        stack.stop()


def test_canary_users_get_the_canary_label_and_a_promotion_moves_everyone(labelled):
    stack, config, v1, v2 = labelled
    answers: list[tuple[str, str, int]] = []  # (user, arm or "", ranking version)
    errors, stop = [], threading.Event()

    def client(users):
        with grpc.insecure_channel(stack.address(ROUTER)) as channel:
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            while not stop.is_set():
                for user in users:
                    try:
                        answer = stub.Recommend(recommend_pb2.RecommendRequest(
                            user_id=user, num_results=5), timeout=10)
                    except grpc.RpcError as err:
                        errors.append(err.code().name)
                        continue
                    if answer.fallback:
                        errors.append(f"fallback {answer.fallback_reason}")
                    arm = answer.assignments[0].arm if answer.assignments else ""
                    answers.append((user, arm, answer.model_versions.ranking))

    threads = [threading.Thread(target=client, args=(USERS[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: {u for u, _, _ in answers} == set(USERS), 60)
        before = list(answers)
        promoted = subprocess.run(
            [sys.executable, "-m", "tools.model_labels", "--config", str(config),
             "promote", "ranking"], cwd=ROOT, env=service_env(), capture_output=True,
            text=True, timeout=60)
        assert promoted.returncode == 0, promoted.stderr
        seen = len(answers)
        # every user outside the canary arm answered by v2 after the model server's reload
        wait_for(lambda: {u for u, arm, v in answers[seen:] if arm != "canary" and v == v2}
                 == {u for u, arm, _ in before if arm != "canary"}, 60)
        wait_for(lambda: loaded_versions(stack, "ranking") == {v2}, 30)  # v1 unloaded
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert not errors, errors[:5]
    arms = {arm for _, arm, _ in before}
    assert arms == {"canary", "control", ""}, arms  # both arms and users outside
    # before: the canary arm on v2, the control arm and everyone else on stable's v1
    assert {v for _, arm, v in before if arm == "canary"} == {v2}
    assert {v for _, arm, v in before if arm != "canary"} == {v1}
    # each user moves once, from v1 to v2, never back; canary users never move
    arm_of = {user: arm for user, arm, _ in before}
    for user in USERS:
        versions = [v for u, _, v in answers if u == user]
        runs = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
        assert runs == ([v2] if arm_of[user] == "canary" else [v1, v2]), (user, runs)
