"""Small readers the integration tests share."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import yaml
from prometheus_client.parser import text_string_to_metric_families

from libs import config as config_lib
from libs.experiments import ExperimentConfig
from recsys.v1 import outcomes_pb2, outcomes_pb2_grpc, recommend_pb2, recommend_pb2_grpc
from tests.conftest import ROOT, TRAINING_PYTHON
from tools import build_manifest
from tools.stack import Stack, free_port, service_env


def rated_items(workdir: Path, user_id: str) -> set[str]:
    with open(workdir / "data" / "raw" / "ratings.csv", newline="") as f:
        return {r["item_id"] for r in csv.DictReader(f) if r["user_id"] == user_id}


def catalog_items(workdir: Path) -> set[str]:
    with open(workdir / "data" / "raw" / "items.csv", newline="") as f:
        return {r["item_id"] for r in csv.DictReader(f)}


def user_in_arm(arm: str, users=range(1, 301)) -> str:
    experiments = config_lib.load(ExperimentConfig, ROOT / "services/router/experiments.yaml")
    return next(str(u) for u in users
                if [a.arm for a in experiments.resolve(str(u))[1]] == [arm])


def newest_version(workdir: Path, model: str) -> int:
    return max(int(p.name) for p in (workdir / "model_repo" / model).iterdir()
               if p.name.isdigit())


class WorkerProcess:
    """The stream worker (pipelines/features/stream.py) as a process of its own."""

    def __init__(self, workdir, redis_address, config_file):
        self.metrics_port = free_port()
        self.stream = f"events-{workdir.name}"
        self.command = [sys.executable, "-m", "pipelines.features.stream",
                        "--set", f"redis={redis_address}", "--set", f"stream={self.stream}",
                        "--set", f"workdir={workdir}", "--set", "block_ms=100",
                        "--set", f"feature_store_config={config_file}",
                        "--set", f"metrics_port={self.metrics_port}"]
        self.log = workdir / "stream.log"
        self.process = None

    def start(self):
        with open(self.log, "ab") as log_file:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=service_env(),
                                            stdout=log_file, stderr=subprocess.STDOUT)
        return self

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)

    def metric(self, outcome: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                      timeout=5).read().decode()
        line = f'recsys_stream_events_total{{outcome="{outcome}"}} '
        return next((float(row[len(line):]) for row in text.splitlines()
                     if row.startswith(line)), 0.0)


def wait_for(check, seconds: float = 60.0):
    """The first truthy value of check(); generous, since it returns as soon as it holds
    and the machine running the tests may be busy."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("not seen in time")


def extra_router(stack: Stack, *overrides: str) -> Stack:
    """One more router over the suite's candidate and ranking services, on its own ports
    (stop it with .stop())."""
    router = Stack(stack.workdir, {**stack.ports, "services/router": (free_port(), free_port())},
                   extra={"services/router": ["deadline_ms=8000", *overrides]})
    router.start_service(build_manifest.load()["services/router"])
    return router


ROUTER, MODEL_SERVER = "services/router", "services/model_server"


def models_config(repo: Path, policies: dict[str, str],
                  labels: dict[str, dict[str, int]] | None = None) -> str:
    """A TF Serving models.config over a model repository: each model's
    model_version_policy (e.g. `latest { num_versions: 3 }`) and version labels."""
    labels = labels or {}
    models = [f'  config {{ name: "{name}" base_path: "{repo / name}" '
              f'model_platform: "tensorflow"\n    model_version_policy {{ {policy} }}'
              + "".join(f'\n    version_labels {{ key: "{label}" value: {version} }}'
                        for label, version in labels.get(name, {}).items()) + " }"
              for name, policy in policies.items()]
    return "model_config_list {\n" + "\n".join(models) + "\n}\n"


def rollout_stack(workdir: Path, folder: Path, models: str, experiments: str, token: str,
                  model_server: tuple[str, ...] = (),
                  extra: dict[str, list[str]] | None = None) -> Stack:
    """A stack of its own over the suite's trained models, set up as rollouts need it
    (started; stop it with .stop()): its model server reads `folder/models.config`
    (`models`, re-read when it changes), its router the experiment document
    `experiments` copied to `folder` (polled every 0.2 s; `token` is an editor's for the
    admin API) and writes its audit, exposure, outcome and shadow logs there. `extra`:
    more settings per service."""
    (folder / "models.config").write_text(models)
    (folder / "tokens.yaml").write_text(yaml.safe_dump({"tokens": [
        {"who": "release-bot", "sha256": hashlib.sha256(token.encode()).hexdigest()}]}))
    (folder / "experiments.yaml").write_text(experiments)
    stack = Stack.on_free_ports(workdir, extra={
        MODEL_SERVER: [f"model_config_file={folder / 'models.config'}", *model_server],
        "services/candidate": ["model_timeout_ms=3000"],
        "services/ranking": ["model_timeout_ms=3000"],
        ROUTER: [f"experiments_file={folder / 'experiments.yaml'}",
                 f"admin_tokens_file={folder / 'tokens.yaml'}",
                 f"experiment_audit_log={folder / 'audit.jsonl'}",
                 f"shadow_log_dir={folder / 'shadow'}", "experiments_poll_seconds=0.2",
                 f"exposure_log_dir={folder / 'exposures'}",
                 f"outcome_log_dir={folder / 'outcomes'}", "deadline_ms=8000"]})
    for name, settings in (extra or {}).items():
        stack.extra[name] = [*stack.extra.get(name, []), *settings]
    stack.start()
    return stack


@contextlib.contextmanager
def traffic(stack):
    """Three clients cycle through 300 users; each answer's first item is clicked half
    the time, reported through RecordOutcomes as a product service would."""
    stop = threading.Event()

    def client(seed):
        rng = random.Random(seed)
        with grpc.insecure_channel(stack.address(ROUTER)) as channel:
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            outcomes = outcomes_pb2_grpc.OutcomeServiceStub(channel)
            user = 0
            while not stop.is_set():
                user = user % 300 + 1
                answer = stub.Recommend(recommend_pb2.RecommendRequest(
                    user_id=str(user), num_results=10), timeout=10)
                if answer.items and rng.random() < 0.5:
                    outcomes.RecordOutcomes(outcomes_pb2.RecordOutcomesRequest(events=[
                        outcomes_pb2.OutcomeEvent(
                            event_id=uuid.uuid4().hex, request_id=answer.request_id,
                            user_id=str(user), item_id=answer.items[0].item_id,
                            type=outcomes_pb2.CLICK)]), timeout=10)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()



def loaded_versions(stack: Stack, model: str) -> set[int]:
    """The versions the model server reports loaded (its Prometheus gauge)."""
    port = stack.ports[MODEL_SERVER][1]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    prefix = f'recsys_model_version_loaded{{model="{model}",version="'
    return {int(line[len(prefix):].split('"')[0]) for line in text.splitlines()
            if line.startswith(prefix) and line.endswith(" 1.0")}


def scraped(address: str, prefix: str) -> dict[tuple, float]:
    """(name, sorted labels but instance) -> value of every series whose name starts
    with `prefix` on a Pushgateway's /metrics."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(prefix):
                labels = tuple(sorted((k, v) for k, v in sample.labels.items()
                                      if k not in ("instance",)))
                series[(sample.name, labels)] = sample.value
    return series


def lineage(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """The lineage CLI (training environment) on `workdir`."""
    return subprocess.run([str(TRAINING_PYTHON), "-m", "pipelines.training.lineage",
                           "--workdir", str(workdir), *args], cwd=ROOT, env=service_env(),
                          capture_output=True, text=True, timeout=300)
