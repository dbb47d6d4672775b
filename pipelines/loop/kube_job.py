"""The loop's retraining on Kubernetes: a Job made from the `retrain` CronJob's template
(the same steps, images and volumes as the scheduled run), started through the API with
the pod's service account and followed until it ends. What `kubectl create job
--from=cronjob/retrain` does, without kubectl in the image.

  python -m pipelines.loop.kube_job [--cronjob retrain] [--poll-seconds 30]
      [--timeout-seconds 21600]

Stopped (SIGTERM: the controller lost its lease to a person), it deletes the Job it
started. Exit code: 0 the Job succeeded, 1 it failed, timed out or the API refused (the
reason on stderr), 2 not in a cluster or no such CronJob.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_NAME = 52  # a CronJob's Jobs: the pods' job-name label must stay within 63
STARTED_BY = "recsys.io/started-by"


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def job_name(cronjob: str, now: float) -> str:
    """Unique per start, e.g. retrain-loop-1796666904."""
    return f"{cronjob[:MAX_NAME - 16]}-loop-{int(now)}"


def job_from_cronjob(cronjob: dict, name: str) -> dict:
    """The Job `kubectl create job --from=cronjob/...` makes: the template's spec and
    labels, owned by the CronJob (deleted with it, listed in its history)."""
    template = cronjob["spec"]["jobTemplate"]
    meta = template.get("metadata", {})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": {**meta.get("labels", {}), STARTED_BY: "loop-controller"},
            "annotations": {**meta.get("annotations", {}),
                            "cronjob.kubernetes.io/instantiate": "manual"},
            "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "CronJob",
                "name": cronjob["metadata"]["name"], "uid": cronjob["metadata"]["uid"],
                "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": template["spec"],
    }


def outcome(job: dict) -> str | None:
    """'succeeded', 'failed: <reason>' or None while it runs (the Job's conditions)."""
    for condition in job.get("status", {}).get("conditions", []):
        if condition.get("status") != "True":
            continue
        if condition["type"] in ("Complete", "SuccessCriteriaMet"):
            return "succeeded"
        if condition["type"] in ("Failed", "FailureTarget"):
            return f"failed: {condition.get('reason', '')} {condition.get('message', '')}".strip()
    return None


class Api:
    """A namespace's API: `in_cluster()` with this pod's service account (the token is
    re-read on each call: Kubernetes rotates it)."""

    def __init__(self, base: str, token: Path, namespace: str,
                 tls: ssl.SSLContext | None = None):
        self.base, self.token, self.namespace, self.tls = base, token, namespace, tls

    @classmethod
    def in_cluster(cls, account: Path = ACCOUNT) -> "Api":
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        if not host or not (account / "token").exists():
            raise ValueError("not in a Kubernetes pod with a service account token "
                             f"(KUBERNETES_SERVICE_HOST, {account / 'token'})")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        return cls(f"https://{host}:{port}", account / "token",
                   (account / "namespace").read_text().strip(),
                   ssl.create_default_context(cafile=str(account / "ca.crt")))

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.base + path, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token.read_text().strip()}",
                     "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self.tls, timeout=30) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            try:
                message = json.loads(err.read()).get("message", err.reason)
            except (ValueError, AttributeError):
                message = err.reason
            raise ApiError(err.code, message) from None

    def jobs(self, name: str = "") -> str:
        return f"/apis/batch/v1/namespaces/{self.namespace}/jobs" + (f"/{name}" if name else "")


def run(api: Api, cronjob_name: str, poll_seconds: float, timeout_seconds: float) -> int:
    try:
        cronjob = api.call("GET", f"/apis/batch/v1/namespaces/{api.namespace}/cronjobs/"
                                  f"{cronjob_name}")
    except ApiError as err:
        print(f"error: --cronjob {cronjob_name}: {err}", file=sys.stderr)
        return 2 if err.status == 404 else 1
    name = job_name(cronjob_name, time.time())
    api.call("POST", api.jobs(), job_from_cronjob(cronjob, name))
    print(f"retrain job {name}: started from cronjob/{cronjob_name}", flush=True)
    finished = False

    def stop(*_):
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            try:
                job = api.call("GET", api.jobs(name))
            except (ApiError, OSError) as err:  # the API restarting: ask again
                print(f"retrain job {name}: cannot read its status ({err})", flush=True)
                time.sleep(poll_seconds)
                continue
            result = outcome(job)
            if result:
                finished = True
                print(f"retrain job {name}: {result}", flush=True)
                return 0 if result == "succeeded" else 1
            status = job.get("status", {})
            print(f"retrain job {name}: active {status.get('active', 0)}, "
                  f"failed pods {status.get('failed', 0)}", flush=True)
            time.sleep(poll_seconds)
        print(f"error: retrain job {name} still running after {timeout_seconds:g} s",
              file=sys.stderr)
        return 1
    finally:
        if not finished:  # stopped or timed out: the Job must not go on by itself
            try:
                api.call("DELETE", api.jobs(name), {"propagationPolicy": "Background"})
                print(f"retrain job {name}: deleted", flush=True)
            except (ApiError, OSError) as err:
                print(f"error: could not delete retrain job {name}: {err}", file=sys.stderr)
        signal.signal(signal.SIGTERM, previous)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cronjob", default="retrain")
    p.add_argument("--poll-seconds", type=float, default=30.0)
    p.add_argument("--timeout-seconds", type=float, default=21600.0)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        api = Api.in_cluster()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return run(api, args.cronjob, args.poll_seconds, args.timeout_seconds)
    except (ApiError, OSError) as err:
        print(f"error: the Kubernetes API: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
