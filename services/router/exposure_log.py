"""Exposure log: one JSON line per Recommend response, what the experiment analysis joins
outcome events (ratings, clicks) to, by request id or by user and time.

Each line goes to the operating system in one append-mode write as the response leaves,
so a router that stops or crashes loses nothing it answered; the file is fsynced every
`fsync_seconds` and on shutdown, for a machine that goes down. Every router process writes
its own file per UTC day (`exposures-<day>-<host>-<pid>.jsonl`), so replicas sharing a
volume never interleave lines. The shadow comparisons (shadow.py) and the outcome log
(outcomes.py) use the same writer.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path


def record(request, response, started: float) -> dict:
    """The line for one answered request (see the analysis: pipelines/experiments)."""
    return {
        "request_id": response.request_id, "timestamp": round(time.time(), 3),
        "user_id": request.user_id, "config_version": response.config_version,
        "assignments": [{"layer": a.layer, "experiment": a.experiment, "arm": a.arm}
                        for a in response.assignments],
        "model_versions": {"retrieval": response.model_versions.retrieval,
                           "ranking": response.model_versions.ranking},
        "items": [item.item_id for item in response.items],
        "scores": [round(item.score, 4) for item in response.items],
        "sources": [item.source for item in response.items],
        "fallback": response.fallback,
        "latency_ms": round((time.monotonic() - started) * 1000, 2),
    }


class ExposureLog:
    def __init__(self, directory: str | Path, fsync_seconds: float = 1.0,
                 prefix: str = "exposures", time_field: str = "timestamp"):
        self.directory, self.prefix = Path(directory), prefix
        self.time_field = time_field  # the files are named by its UTC day
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync_seconds = fsync_seconds
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._day = ""
        self._last_sync = time.monotonic()

    def path_for(self, day: str) -> Path:
        return self.directory / f"{self.prefix}-{day}-{socket.gethostname()}-{os.getpid()}.jsonl"

    def write(self, line: dict) -> None:
        self.write_many([line])

    def write_many(self, lines: list[dict]) -> None:
        """The lines in one write per UTC day of their `time_field` (one, as a rule)."""
        by_day: dict[str, list[bytes]] = {}
        for line in lines:
            day = time.strftime("%Y-%m-%d", time.gmtime(line[self.time_field]))
            by_day.setdefault(day, []).append(
                (json.dumps(line, separators=(",", ":")) + "\n").encode())
        with self._lock:
            for day, data in by_day.items():
                if day != self._day:
                    self._open(day)
                os.write(self._fd, b"".join(data))
            if time.monotonic() - self._last_sync >= self.fsync_seconds:
                os.fsync(self._fd)
                self._last_sync = time.monotonic()

    def _open(self, day: str) -> None:
        self._close()
        path = self.path_for(day)
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self._day = day
        # A process killed mid-write left a cut line; a restart with the same pid (pid 1
        # in a container) appends to the same file: end the cut line first, so the next
        # line is not glued to it
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            os.write(self._fd, b"\n")

    def _close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close()
