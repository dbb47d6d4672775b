"""Starts the model server and the three services as processes, wired together.

  python -m tools.stack --workdir var            # foreground; Ctrl-C or SIGTERM stops all

A service that exits is restarted, as Kubernetes restarts a container, after a backoff
that grows with its recent crashes (`restart_delay`); the others keep serving. The stack
stops on Ctrl-C / SIGTERM, or when a service keeps crashing (it says which and why).

Services and their start order come from BUILD; each gets its own config file plus the
overrides that wire it to the others (ports, model repository, catalog). Logs go to
`<workdir>/logs/<service>.log`. Tests use `Stack` with free ports.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.feature_spec import MODEL_NAMES
from libs.feature_store import SUMMARY_FILE
from tools import build_manifest

ROOT = build_manifest.ROOT
SERVICES = build_manifest.services_in_start_order(build_manifest.load())


def configured_ports() -> dict[str, tuple[int, int]]:
    """(grpc, metrics) port of each service from its config file and environment, the
    same sources the service itself reads (RECSYS_<SERVICE>_PORT overrides the file)."""
    ports = {}
    for target in SERVICES:
        values = yaml.safe_load((ROOT / target.config).read_text()) or {}
        prefix = f"RECSYS_{target.name.split('/')[-1].upper()}"
        ports[target.name] = tuple(int(os.environ.get(f"{prefix}_{key.upper()}", values[key]))
                                   for key in ("port", "metrics_port"))
    return ports


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Process:
    name: str
    port: int
    metrics_port: int
    popen: subprocess.Popen
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def service_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "libs" / "protos")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


class Stack:
    """`replicas`: more than one process of a service (on free ports after the first);
    its clients are given every replica's address and spread their calls over them."""

    def __init__(self, workdir: str | Path, ports: dict[str, tuple[int, int]] | None = None,
                 extra: dict[str, list[str]] | None = None,
                 replicas: dict[str, int] | None = None):
        self.workdir = Path(workdir).resolve()
        self.ports = ports or configured_ports()
        self.extra = extra or {}
        self.replica_ports = {name: [first] + [(free_port(), free_port()) for _ in range(
            (replicas or {}).get(name, 1) - 1)] for name, first in self.ports.items()}
        self.processes: dict[str, Process] = {}

    @classmethod
    def on_free_ports(cls, workdir, **kwargs) -> "Stack":
        return cls(workdir, {t.name: (free_port(), free_port()) for t in SERVICES},
                   **kwargs)

    def address(self, name: str) -> str:
        """The (first replica's) address of a service."""
        return f"127.0.0.1:{self.ports[name][0]}"

    def target(self, name: str) -> str:
        """What a client of the service dials: every replica's address."""
        ports = self.replica_ports[name]
        if len(ports) == 1:
            return self.address(name)
        return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port, _ in ports)

    @staticmethod
    def replica_name(name: str, replica: int) -> str:
        return name if replica == 0 else f"{name}#{replica}"

    def experiments_file(self) -> Path:
        """The workdir's experiment document, first copied from the shipped one: the admin
        API rewrites it, and must not rewrite the repository's."""
        path = self.workdir / "experiments.yaml"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / "services" / "router" / "experiments.yaml", path)
        return path

    def served_models(self) -> list[str]:
        """The models with a pushed version; the model server serves only these, so it
        is ready without the others (their stage answers MODEL_NOT_SERVED)."""
        return [name for name in (MODEL_NAMES.retrieval, MODEL_NAMES.ranking)
                if list((self.workdir / "model_repo" / name).glob("*/saved_model.pb"))]

    def _overrides(self, name: str, replica: int = 0) -> list[str]:
        features = [f"feature_store_dir={self.workdir / 'features'}",
                    f"catalog_dir={self.workdir / 'data' / 'raw'}"]
        model_server = f"model_server={self.target('services/model_server')}"
        wiring = {
            "services/model_server": [f"model_repo={self.workdir / 'model_repo'}",
                                      f"model_names={json.dumps(self.served_models())}"],
            "services/candidate": [model_server, *features, "model_base_path="
                                   f"{self.workdir / 'model_repo' / MODEL_NAMES.retrieval}"],
            "services/ranking": [model_server, *features],
            "services/router": [f"candidate_service={self.target('services/candidate')}",
                                f"ranking_service={self.target('services/ranking')}",
                                f"exposure_log_dir={self.workdir / 'exposures'}",
                                f"shadow_log_dir={self.workdir / 'shadow'}",
                                f"outcome_log_dir={self.workdir / 'outcomes'}",
                                f"experiments_file={self.experiments_file()}",
                                f"experiment_audit_log={self.workdir / 'experiments_audit.jsonl'}",
                                f"privacy_workdir={self.workdir}", *features],
        }[name]
        port, metrics_port = self.replica_ports[name][replica]
        return [f"port={port}", f"metrics_port={metrics_port}", *wiring,
                *self.extra.get(name, [])]

    def start_service(self, target: build_manifest.Target, timeout: float = 90.0,
                      replica: int = 0) -> Process:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        name = self.replica_name(target.name, replica)
        log_path = logs / f"{name.split('/')[-1].replace('#', '-')}.log"
        command = [sys.executable, "-m", target.entry, "--config", str(ROOT / target.config)]
        for override in self._overrides(target.name, replica):
            command += ["--set", override]
        with open(log_path, "ab") as log_file:
            popen = subprocess.Popen(command, cwd=ROOT, env=service_env(), stdout=log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        port, metrics_port = self.replica_ports[target.name][replica]
        process = Process(name, port, metrics_port, popen, log_path)
        self.processes[name] = process
        self._wait_healthy(process, timeout)
        return process

    def start(self, progress=None) -> "Stack":
        try:
            for target in SERVICES:
                for replica in range(len(self.replica_ports[target.name])):
                    started = time.monotonic()
                    process = self.start_service(target, replica=replica)
                    if progress:
                        progress(f"  {process.name:24s} {process.address:16s} metrics :"
                                 f"{process.metrics_port}  ready in "
                                 f"{time.monotonic() - started:4.1f}s")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, process: Process, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(process.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if process.popen.poll() is not None:
                    tail = process.log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{process.name} exited with code "
                                       f"{process.popen.returncode}:\n{tail}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise TimeoutError(f"{process.name} not healthy after {timeout:.0f}s; "
                           f"see {process.log_path}")

    def stop_service(self, name: str, timeout: float = 15.0) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.popen.poll() is not None:
            return
        process.popen.send_signal(signal.SIGTERM)
        try:
            process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait()

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop_service(name)


# Seconds before a crashed service's restart, by how many times it crashed within
# CRASH_WINDOW; past the last, it is crash-looping and the stack stops.
RESTART_BACKOFF = (1, 2, 4, 8, 16)
CRASH_WINDOW = 120.0


def restart_delay(crashes: list[float], now: float) -> float | None:
    """Seconds to wait before restarting a service that crashed at the times `crashes`
    (the newest included); None when it crashed too often to go on."""
    recent = sum(1 for t in crashes if now - t < CRASH_WINDOW)
    return RESTART_BACKOFF[recent - 1] if recent <= len(RESTART_BACKOFF) else None


class CrashLoop(RuntimeError):
    pass


class Supervisor:
    """Watches the stack's processes and restarts those that exit (see restart_delay)."""

    def __init__(self, stack: "Stack", progress=print):
        self.stack, self.progress = stack, progress
        self.crashes: dict[str, list[float]] = {}
        self.due: dict[str, float] = {}  # name -> when to restart it
        self.targets = {t.name: t for t in SERVICES}

    def check(self) -> None:
        """Notes the processes that exited and restarts those whose backoff is over;
        raises CrashLoop for a service that keeps crashing."""
        now = time.monotonic()
        for name, process in list(self.stack.processes.items()):
            code = process.popen.poll()
            if code is not None:
                del self.stack.processes[name]
                self._crashed(name, f"exited (code {code})", process.log_path, now)
        for name, due in list(self.due.items()):
            if now < due:
                continue
            del self.due[name]
            base, _, replica = name.partition("#")
            started = time.monotonic()
            try:
                process = self.stack.start_service(self.targets[base],
                                                   replica=int(replica or 0))
            except (RuntimeError, TimeoutError) as err:
                log_path = self.stack.processes[name].log_path
                self.stack.stop_service(name)
                self._crashed(name, f"did not come back ({str(err).splitlines()[0]})",
                              log_path, time.monotonic())
                continue
            self.progress(f"{name} restarted, ready in {time.monotonic() - started:.1f}s "
                          f"(pid {process.popen.pid})")

    def _crashed(self, name: str, what: str, log_path: Path, now: float) -> None:
        self.crashes.setdefault(name, []).append(now)
        delay = restart_delay(self.crashes[name], now)
        if delay is None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise CrashLoop(f"{name} {what}, its {len(self.crashes[name])}th crash in "
                            f"{CRASH_WINDOW:.0f}s: giving up; its last log lines "
                            f"({log_path}):\n  " + "\n  ".join(tail))
        self.progress(f"{name} {what}; restarting in {delay}s (log: {log_path})")
        self.due[name] = now + delay


def unpushed_models(workdir: str) -> list[str]:
    """A line per model the gates never let into the model repository, with why (the
    last run's final gate). The stack serves without them: see WITHOUT_MODELS."""
    summary_file = Path(workdir, "last_run.json")
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    lines = []
    for name in (MODEL_NAMES.retrieval, MODEL_NAMES.ranking):
        if not list(Path(workdir, "model_repo", name).glob("*/saved_model.pb")):
            reasons = summary.get(name, {}).get("final_gate", {}).get("reasons") or [
                "no pipeline run found"]
            lines.append(f"no {name} model was pushed: " + "; ".join(reasons))
    return lines


WITHOUT_MODELS = ("serving without it: its stage is skipped and every answer says "
                  "fallback MODEL_NOT_SERVED (no retrieval model: popular items; no ranking "
                  "model: retrieval order); restart the stack once a version is pushed")


def warn_unpushed(workdir: str) -> None:
    for line in unpushed_models(workdir):
        print(f"warning: {line}\n         {WITHOUT_MODELS}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run the serving stack in the foreground.")
    parser.add_argument("--workdir", default="var",
                        help="training workdir holding model_repo/, features/ and data/raw/")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    warn_unpushed(str(workdir))
    if not (workdir / "features" / SUMMARY_FILE).exists():
        print(f"error: no feature store under {workdir / 'features'}; "
              "ingest features first (make features)", file=sys.stderr)
        return 2
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    stack = Stack(workdir)
    print("starting the serving stack:", flush=True)
    try:
        stack.start(progress=lambda line: print(line, flush=True))
        print(f"ready: RecommendService on {stack.address('services/router')}; "
              f"logs in {workdir / 'logs'}; Ctrl-C stops", flush=True)
        supervisor = Supervisor(stack, progress=lambda line: print(line, flush=True))
        while not stopping:
            supervisor.check()
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        print("stopping...", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
