"""The loop's retraining on Kubernetes: a Job from the retrain CronJob's template, followed
until it ends, deleted when the controller stops it. The API answering here is a small
stand-in on loopback (no API server runs on this machine) that keeps what it is sent; the
CronJob it serves is the one the dev overlay renders."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines.loop import kube_job
from tests.conftest import ROOT
from tools import manifests

PREFIX = "/apis/batch/v1/namespaces/recsys-dev"


@pytest.fixture(scope="module")
def retrain_cronjob() -> dict:
    cronjob = next(o for o in manifests.overlay("dev")
                   if o["kind"] == "CronJob" and o["metadata"]["name"] == "retrain")
    cronjob["metadata"]["uid"] = "5f0c-retrain"  # the API server sets it
    return cronjob


class StandIn:
    """Serves the CronJob, keeps the Jobs created and deleted; a Job ends after `polls`
    status reads with `ending` (a Job condition type) or never (None)."""

    def __init__(self, cronjob: dict, polls: int = 2, ending: str | None = "Complete"):
        self.cronjob, self.polls, self.ending = cronjob, polls, ending
        self.jobs, self.deleted, self.tokens, self.reads = {}, [], set(), 0

    def handler(self):
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def do_GET(self):
                stand_in.tokens.add(self.headers["Authorization"])
                if self.path == f"{PREFIX}/cronjobs/retrain":
                    return self.answer(200, stand_in.cronjob)
                name = self.path.rsplit("/", 1)[-1]
                if self.path.startswith(f"{PREFIX}/jobs/") and name in stand_in.jobs:
                    stand_in.reads += 1
                    job = stand_in.jobs[name]
                    if stand_in.ending and stand_in.reads >= stand_in.polls:
                        job["status"] = {"conditions": [
                            {"type": "SuccessCriteriaMet", "status": "False"},
                            {"type": stand_in.ending, "status": "True",
                             "reason": "BackoffLimitExceeded"}]}
                    else:
                        job["status"] = {"active": 1}
                    return self.answer(200, job)
                self.answer(404, {"kind": "Status", "message": f"{name} not found"})

            def do_POST(self):
                job = self.body()
                stand_in.jobs[job["metadata"]["name"]] = job
                self.answer(201, job)

            def do_DELETE(self):
                stand_in.deleted.append((self.path.rsplit("/", 1)[-1], self.body()))
                self.answer(200, {"kind": "Status", "status": "Success"})

        return Handler


@pytest.fixture
def serve(tmp_path):
    servers = []
    token = tmp_path / "token"
    token.write_text("rotated-token\n")

    def start(stand_in: StandIn) -> kube_job.Api:
        server = ThreadingHTTPServer(("127.0.0.1", 0), stand_in.handler())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return kube_job.Api(f"http://127.0.0.1:{server.server_port}", token, "recsys-dev")

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_job_runs_the_cronjobs_template_and_succeeds_when_it_completes(
        retrain_cronjob, serve, capsys):
    stand_in = StandIn(retrain_cronjob, polls=2)
    assert kube_job.run(serve(stand_in), "retrain", 0.01, 30) == 0
    [(name, job)] = stand_in.jobs.items()
    template = retrain_cronjob["spec"]["jobTemplate"]
    assert name.startswith("retrain-loop-") and len(name) <= kube_job.MAX_NAME
    assert job["spec"] == template["spec"]  # the same steps, images and volumes
    assert job["metadata"]["labels"] == {**template.get("metadata", {}).get("labels", {}),
                                         kube_job.STARTED_BY: "loop-controller"}
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("CronJob", "retrain", "5f0c-retrain")
    assert stand_in.tokens == {"Bearer rotated-token"} and stand_in.deleted == []
    out = capsys.readouterr().out
    assert f"retrain job {name}: active 1" in out and f"retrain job {name}: succeeded" in out


def test_a_failed_job_fails_the_retraining_with_its_reason(retrain_cronjob, serve, capsys):
    stand_in = StandIn(retrain_cronjob, polls=1, ending="Failed")
    assert kube_job.run(serve(stand_in), "retrain", 0.01, 30) == 1
    assert "failed: BackoffLimitExceeded" in capsys.readouterr().out
    assert stand_in.deleted == []  # a failed Job stays, to be looked at


def test_a_job_still_running_at_the_deadline_or_stopped_is_deleted(retrain_cronjob, serve):
    stand_in = StandIn(retrain_cronjob, ending=None)
    assert kube_job.run(serve(stand_in), "retrain", 0.01, 0.1) == 1
    [name] = stand_in.jobs
    assert stand_in.deleted == [(name, {"propagationPolicy": "Background"})]

    # the controller lost its lease to a person: SIGTERM
    stand_in = StandIn(retrain_cronjob, ending=None)
    api = serve(stand_in)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(SystemExit) as stopped:
        kube_job.run(api, "retrain", 0.02, 30)
    timer.join()
    assert stopped.value.code == 143
    assert [d[0] for d in stand_in.deleted] == list(stand_in.jobs)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


def test_a_missing_cronjob_or_no_cluster_is_bad_input(retrain_cronjob, serve, capsys):
    assert kube_job.run(serve(StandIn(retrain_cronjob)), "retrian", 0.01, 1) == 2
    assert "--cronjob retrian: HTTP 404: retrian not found" in capsys.readouterr().err
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    done = subprocess.run([sys.executable, "-m", "pipelines.loop.kube_job"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: not in a Kubernetes pod") and "Traceback" not in \
        done.stderr
