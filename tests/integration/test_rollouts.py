"""Rollout patterns on real processes: blue/green switches of the serving model version
under load, shadow traffic, and canaries rolled back or promoted. A stack of its own,
whose model server keeps the three newest versions of each model loaded (as a rollout
needs), over the suite's trained models."""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import threading
import time

import grpc
import pytest
import yaml

from libs import model_config, model_labels
from pipelines.experiments import canary
from recsys.v1 import (experiments_pb2_grpc, recommend_pb2,
                       recommend_pb2_grpc)
from tests.conftest import ROOT
from tests.integration.helpers import (MODEL_SERVER, ROUTER, loaded_versions, models_config,
                                       newest_version, rollout_stack, traffic, user_in_arm,
                                       wait_for)
from tools.stack import service_env

TOKEN = "rollout-editor-token"
# a few hundred users in seconds cannot show "no worse than 10 %" (that takes about
# 10,000: README, Experiments); this bound only keeps a copy of stable from losing. Steps
# of 4-5 s: in 2 s a slow CI run saw 46 users on stable, too few even for this bound.
MARGIN = 0.5


@pytest.fixture(scope="module")
def rollout(trained, tmp_path_factory):
    workdir, _ = trained
    folder = tmp_path_factory.mktemp("rollout")
    repo = workdir / "model_repo"
    blue = newest_version(workdir, "ranking")
    shutil.copytree(repo / "ranking" / str(blue), repo / "ranking" / str(blue + 1))
    stack = rollout_stack(
        workdir, folder,
        models_config(repo, dict.fromkeys(("retrieval", "ranking"), "latest { num_versions: 3 }")),
        (ROOT / "services/router/experiments.yaml").read_text(), TOKEN)
    try:
        wait_for(lambda: loaded_versions(stack, "ranking") >= {blue, blue + 1}, 60)
        yield stack, folder, blue, blue + 1
    finally:
        stack.stop()


def cli(stack, *args):
    result = subprocess.run(
        [sys.executable, "-m", "tools.experiments", "--router", stack.address(ROUTER), *args],
        cwd=ROOT, env={**service_env(), "RECSYS_ADMIN_TOKEN": TOKEN}, capture_output=True,
        text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_blue_green_switch_and_back_fails_no_request(rollout):
    stack, _, blue, green = rollout
    cli(stack, "switch", "--ranking-version", str(blue))
    user = user_in_arm("two_stage")
    stop, errors = threading.Event(), []
    seen: list[list[int]] = [[] for _ in range(4)]

    def client(versions):
        with grpc.insecure_channel(stack.address(ROUTER)) as channel:
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            while not stop.is_set():
                try:
                    answer = stub.Recommend(recommend_pb2.RecommendRequest(
                        user_id=user, num_results=10), timeout=10)
                    if answer.fallback:
                        errors.append(f"fallback {answer.fallback_reason}")
                    versions.append(answer.model_versions.ranking)
                except grpc.RpcError as err:
                    errors.append(err.code().name)

    threads = [threading.Thread(target=client, args=(versions,)) for versions in seen]
    for thread in threads:
        thread.start()
    try:
        for version in (green, blue):
            time.sleep(1.0)
            cli(stack, "switch", "--ranking-version", str(version))
            wait_for(lambda: all(v and v[-1] == version for v in seen), 30)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors[:5]
    for versions in seen:
        # each client: blue, then green, then blue again; never back and forth
        runs = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
        assert runs == [blue, green, blue], runs


def test_shadow_is_compared_and_logged_and_never_answers(rollout):
    stack, folder, blue, green = rollout
    cli(stack, "switch", "--ranking-version", str(blue))
    cli(stack, "shadow", "100", "--ranking-version", str(green))
    users = [str(u) for u in range(1, 21)]
    try:
        with grpc.insecure_channel(stack.address(ROUTER)) as channel:
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            answers = [stub.Recommend(recommend_pb2.RecommendRequest(
                user_id=u, num_results=10), timeout=10) for u in users]
    finally:
        cli(stack, "shadow", "0")
    ranked = [a for a in answers if a.assignments[0].arm == "two_stage" and not a.fallback]
    # the clients got the live model, never the shadow's
    assert ranked and {a.model_versions.ranking for a in ranked} == {blue}

    def logged():
        lines = [json.loads(line) for path in (folder / "shadow").glob("shadow-*.jsonl")
                 for line in path.read_text().splitlines()]
        return len(lines) >= len(answers) and lines
    entries = {e["request_id"]: e for e in wait_for(logged, 30)}
    for answer in answers:
        entry = entries[answer.request_id]
        assert entry["primary_items"] == [i.item_id for i in answer.items]
        assert entry["shadow_serves"]["ranking_version"] == green
        assert entry["shadow_latency_ms"] > 0 and entry["primary_latency_ms"] > 0
        # green is a copy of blue: the same model ranks the same items the same way
        assert entry["overlap_at_k"] == 1.0 and entry["shadow_items"] == entry["primary_items"]
        if answer in ranked:
            assert entry["shadow_model_versions"]["ranking"] == green


def push(stack, source: int, version: int, model_dir=None) -> None:
    repo = stack.workdir / "model_repo" / "ranking"
    shutil.copytree(model_dir or repo / str(source), repo / str(version))
    wait_for(lambda: version in loaded_versions(stack, "ranking"), 60)


def run_canary_under_load(stack, folder, plan):
    with traffic(stack), grpc.insecure_channel(stack.address(ROUTER)) as channel:
        return canary.run(plan, experiments_pb2_grpc.ExperimentServiceStub(channel),
                          TOKEN, canary.Logs(folder / "exposures", folder / "outcomes"),
                          progress_line=lambda _: None)


def ranking_versions(stack, users=range(1, 41)) -> set[int]:
    with grpc.insecure_channel(stack.address(ROUTER)) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        answers = [stub.Recommend(recommend_pb2.RecommendRequest(user_id=str(u),
                                                                 num_results=5), timeout=10)
                   for u in users]
    assert not any(a.fallback for a in answers if a.model_versions.retrieval)
    return {a.model_versions.ranking for a in answers} - {0}  # 0: the retrieval-only arm


def test_a_failing_canary_is_rolled_back_and_a_good_one_promoted(rollout):
    stack, folder, _, green = rollout
    cli(stack, "switch", "--ranking-version", str(green))
    # a model that loads but cannot rank (the retrieval model under the ranking name):
    # every ranking call on it fails and the router falls back
    bad, good = green + 1, green + 2
    push(stack, None, bad, model_dir=stack.workdir / "model_repo" / "retrieval" /
         str(newest_version(stack.workdir, "retrieval")))
    plan = canary.Plan({"ranking": bad}, {"ranking": green}, steps=[20, 50],
                       step_seconds=2, min_requests=20, margin=MARGIN)
    result = run_canary_under_load(stack, folder, plan)
    print(f"canary of a broken version: {result['outcome']} after "
          f"{result['seconds']} s: {result['reasons']}")
    assert result["outcome"] == "rolled back", result
    assert result["reasons"][0].startswith("guardrail: fallback rate"), result
    assert ranking_versions(stack) == {green}  # everyone back on stable

    push(stack, green, good)
    # no latency bound here: p99 over a few dozen calls on a shared two-core machine is
    # noise (the latency guard's arithmetic is unit-tested)
    plan = canary.Plan({"ranking": good}, {"ranking": green}, steps=[20, 50],
                       step_seconds=4, min_requests=20, max_p99_ratio=float("inf"),
                       margin=MARGIN)
    result = run_canary_under_load(stack, folder, plan)
    print(f"canary of a good version: {result['outcome']} after {result['seconds']} s: "
          f"{result['reasons']}")
    assert result["outcome"] == "promoted", result
    assert [step["share"] for step in result["steps"]] == [20, 50]
    wait_for(lambda: ranking_versions(stack) == {good}, 30)
    audit = [json.loads(line)["action"] for line in (folder / "audit.jsonl").read_text()
             .splitlines()]
    assert audit[-4:] == ["create", "update", "switch", "stop"]


def test_a_canary_for_label_promotion_passes_and_leaves_the_defaults(rollout):
    """On Kubernetes the controller only judges (`--promotion labels`): a passing canary
    stops its experiment and leaves the defaults alone, for a label move to promote."""
    stack, folder, _, _ = rollout
    stable = max(loaded_versions(stack, "ranking"))
    cli(stack, "switch", "--ranking-version", str(stable))
    candidate = stable + 1
    push(stack, stable, candidate)
    plan = canary.Plan({"ranking": candidate}, {"ranking": stable}, steps=[50],
                       step_seconds=5, min_requests=20, max_p99_ratio=float("inf"),
                       margin=MARGIN, promotion="labels")
    result = run_canary_under_load(stack, folder, plan)
    assert result["outcome"] == "passed", result
    assert int(cli(stack, "list")["defaults"]["ranking_version"]) == stable
    assert ranking_versions(stack) == {stable}  # the experiment is stopped
    audit = [json.loads(line)["action"] for line in (folder / "audit.jsonl").read_text()
             .splitlines()]
    assert audit[-2:] == ["create", "stop"]


def loop_tick(stack, folder, retrain_from: str, *extra: str):
    """One tick of the loop's controller (a process of its own, as a CronJob runs it):
    its "retraining" pushes a copy of the model directory `retrain_from` as the newest
    ranking version, so the canary judges a model whose quality the test knows."""
    repo = stack.workdir / "model_repo"
    copy = ("import pathlib, shutil, sys; repo = pathlib.Path(sys.argv[1]); "
            "new = max(int(p.name) for p in (repo / 'ranking').iterdir()) + 1; "
            "shutil.copytree(repo / sys.argv[2], repo / 'ranking' / str(new))")
    drift = folder / "drift.json"
    drift.write_text(json.dumps({
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "drift": True,
        "results": [{"feature": "age", "check": "features", "detected": True}]}))
    return subprocess.run(
        [sys.executable, "-m", "pipelines.loop.controller", "--dir", str(folder / "loop"),
         "tick", "--workdir", str(stack.workdir), "--drift-report", str(drift),
         "--retrain-days", "0", "--retrain-command",
         shlex.join([sys.executable, "-c", copy, str(repo), retrain_from]),
         "--router", stack.address(ROUTER), "--model-server", stack.address(MODEL_SERVER),
         "--exposures", str(folder / "exposures"), "--outcomes", str(folder / "outcomes"),
         "--canary-steps", "20,50", "--canary-step-seconds", "4",
         "--canary-min-requests", "20", "--canary-margin", str(MARGIN),
         "--canary-max-p99-ratio", "3", *extra],
        cwd=ROOT, env={**service_env(), "RECSYS_ADMIN_TOKEN": TOKEN}, capture_output=True,
        text=True, timeout=120)


def loop_until_decided(stack, folder, retrain_from: str, *extra: str) -> dict:
    """Ticks (each a new controller process, resuming from the state on disk) until the
    loop has retrained and its canary decided; the decision from the audit log."""
    deadline = time.time() + 240
    with traffic(stack):
        while time.time() < deadline:
            done = loop_tick(stack, folder, retrain_from, *extra)
            assert done.returncode == 0, done.stdout + done.stderr
            steps = [json.loads(line) for line in
                     (folder / "loop" / "audit.jsonl").read_text().splitlines()]
            decided = [s for s in steps if s["action"] == "canary decided"]
            if decided and len(decided) == sum(s["action"] == "canary planned"
                                               for s in steps):
                return decided[-1]
            time.sleep(0.5)
    raise AssertionError(f"no canary decision in 240 s: {steps[-3:]}")


def test_the_loop_canaries_what_it_pushed_and_promotes_or_rolls_back(rollout):
    """Drift -> retrain -> canary on outcomes -> promote, with no person: the versions
    pushed by the loop reach users only through its canary; a broken one never does."""
    stack, folder, _, _ = rollout
    folder = folder / "loop-run"
    folder.mkdir()
    for name in ("exposures", "outcomes"):  # the router writes to the rollout folder
        (folder / name).symlink_to(folder.parent / name)
    stable = int(cli(stack, "list")["defaults"].get("ranking_version") or 0) or \
        max(loaded_versions(stack, "ranking"))
    good = newest_version(stack.workdir, "ranking") + 1
    decision = loop_until_decided(stack, folder, f"ranking/{stable}")
    print(f"loop canary of a copy of stable: {decision['outcome']} after "
          f"{decision['seconds']} s: {decision['reasons']}")
    assert decision["outcome"] == "promoted", decision
    assert decision["candidate"] == {"ranking": good}
    assert int(cli(stack, "list")["defaults"]["ranking_version"]) == good
    wait_for(lambda: ranking_versions(stack) == {good}, 30)

    broken_from = f"retrieval/{newest_version(stack.workdir, 'retrieval')}"
    decision = loop_until_decided(stack, folder, broken_from)
    print(f"loop canary of a broken version: {decision['outcome']}: {decision['reasons']}")
    assert decision["outcome"] == "rolled back", decision
    assert decision["reasons"][0].startswith("guardrail: fallback rate"), decision
    assert int(cli(stack, "list")["defaults"]["ranking_version"]) == good
    assert ranking_versions(stack) == {good}  # the canary's users are back on stable
    actions = [json.loads(line)["action"] for line in
               (folder / "loop" / "audit.jsonl").read_text().splitlines()]
    assert actions.count("retrain") == 2 and actions.count("canary decided") == 2
    shown = subprocess.run(
        [sys.executable, "-m", "pipelines.loop.controller", "--dir", str(folder / "loop"),
         "timeline", "--out", str(folder / "timeline")], cwd=ROOT, env=service_env(),
        capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    print(shown.stdout)
    loops = json.loads((folder / "timeline" / "timeline.json").read_text())
    assert [entry["outcome"] for entry in loops] == ["promoted", "rolled back"]
    for entry in loops:  # every phase, from the drift report to the decision, is timed
        assert set(entry["seconds"]) == {"reaction", "retraining", "loading", "canary",
                                         "detection to decision"}, entry


def test_the_loop_rolls_out_by_labels_as_on_kubernetes(rollout):
    """With --models-config the loop moves version labels, as a person would with
    tools.model_labels: the pushed version loads beside stable's, `canary` names it, and
    the promotion moves `stable` to it; the router's defaults keep serving the label."""
    stack, folder, _, _ = rollout
    config = folder / "models.config"
    folder = folder / "labels-run"
    folder.mkdir()
    for name in ("exposures", "outcomes"):
        (folder / name).symlink_to(folder.parent / name)
    stable = int(cli(stack, "list")["defaults"].get("ranking_version") or 0) or \
        max(loaded_versions(stack, "ranking"))
    model_labels.edit(config, "set", "ranking", "stable", str(stable))
    cli(stack, "switch", "--ranking-version-label", "stable")
    good = newest_version(stack.workdir, "ranking") + 1
    decision = loop_until_decided(stack, folder, f"ranking/{stable}",
                                  "--models-config", str(config))
    print(f"loop canary by labels: {decision['outcome']}: {decision['reasons']}")
    assert decision["outcome"] == "promoted", decision
    [ranking] = [m for m in model_config.read(config).model_config_list.config
                 if m.name == "ranking"]
    assert dict(ranking.version_labels) == {"stable": good, "canary": good}
    assert list(ranking.model_version_policy.specific.versions) == [good]
    assert cli(stack, "list")["defaults"]["ranking_version_label"] == "stable"
    wait_for(lambda: loaded_versions(stack, "ranking") == {good}, 90)
    wait_for(lambda: ranking_versions(stack) == {good}, 30)
