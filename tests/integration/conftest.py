"""One small run of the real data path (Beam feature job, Feast, point-in-time training
set, TFX pipeline), then the real serving stack.

Generated data, small, so the suite stays fast; the Beam job and the pipeline run in the
training environment as `make train` runs them; the four serving processes start on
free loopback ports and are always stopped at the end.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request

import grpc
import pytest

from libs.feature_store_config import FeatureStoreConfig
from pipelines.data import synthetic
from pipelines.features import ingest, training_set
from recsys.v1 import recommend_pb2_grpc
from tests.conftest import ROOT, TRAINING_PYTHON
from tools.stack import Stack, free_port, service_env

SMALL_DATA = (300, 400, 20_000)  # users, items, ratings
GATEWAY = "/usr/bin/prometheus-pushgateway"
SMALL_RUN = ["retrieval_train_steps=60", "ranking_train_steps=80", "eval_steps=5"]
# for runs about something other than the candidate sources: building them and their
# blend takes a third of a small run
WITHOUT_SOURCES = "hyperparameters={retrieval: {candidate_sources: false}}"


def build_features(workdir, data=None) -> dict:
    """`make features`: Beam job, Feast apply and materialization, the training set."""
    ingest.run_batch_job(workdir, data)
    ingest.ingest(FeatureStoreConfig(), workdir, progress=None)
    return training_set.build(FeatureStoreConfig(), workdir, progress=None)


def run_pipeline(workdir, *overrides: str) -> dict:
    command = [str(TRAINING_PYTHON), "-m", "pipelines.training.run",
               "--workdir", str(workdir)]
    for override in (*SMALL_RUN, *overrides):
        command += ["--set", override]
    temp = workdir / "tmp"  # the run's own temp dir, so a test can see what it leaves
    temp.mkdir(exist_ok=True)
    env = {**service_env(), "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(temp)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    if result.returncode != 0:
        raise AssertionError(f"pipeline failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return json.loads((workdir / "last_run.json").read_text())


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Features of generated data in Feast (SQLite), and models trained on them, pushed."""
    workdir = tmp_path_factory.mktemp("recsys")
    build_features(workdir, synthetic.generate(*SMALL_DATA))
    return workdir, run_pipeline(workdir)


@pytest.fixture(scope="session")
def refused(trained):
    """One run whose models break every gate: too little training to beat the last
    blessed models, and fairness bounds no model meets (no group's recommendations match
    its taste exactly, nor do two groups' RMSE; at 50% confidence the extreme groups' gap
    is positive). Its summary, and the model repository's versions before and after."""
    workdir, _ = trained
    repo = workdir / "model_repo"

    def versions() -> dict:
        return {name: sorted(p.name for p in (repo / name).iterdir())
                for name in ("retrieval", "ranking")}

    before = versions()
    summary = run_pipeline(workdir, WITHOUT_SOURCES, "retrieval_train_steps=1",
                           "ranking_train_steps=1", "fairness_max_genre_gap=0",
                           "fairness_max_rmse_difference=0", "fairness_confidence=0.5")
    return summary, before, versions()


@pytest.fixture(scope="session")
def stack(trained):
    workdir, _ = trained
    # Generous timeouts: the suite checks behaviour on a shared, noisy 2-core machine;
    # latency is measured by `make loadtest`, not asserted here.
    stack = Stack.on_free_ports(workdir, extra={
        "services/candidate": ["log_level=DEBUG", "model_timeout_ms=3000"],
        "services/ranking": ["model_timeout_ms=3000"],
        "services/router": ["log_level=DEBUG", "deadline_ms=8000"]})
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def recommend(stack):
    channel = grpc.insecure_channel(stack.address("services/router"))
    yield recommend_pb2_grpc.RecommendServiceStub(channel)
    channel.close()


@pytest.fixture
def pushgateway():
    """A real Pushgateway on a free loopback port, in memory only; always stopped."""
    if not shutil.which(GATEWAY):
        pytest.fail(f"{GATEWAY} is not installed (apt-get install prometheus-pushgateway; "
                    ".ci/run does it)")
    port = free_port()
    process = subprocess.Popen([GATEWAY, f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the Pushgateway did not start") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
