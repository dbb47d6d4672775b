"""One loop at a time: a lease file, held by one controller until it expires unless the
holder renews it.

`<dir>/lease.json` holds {"holder", "acquired", "expires", "taken_over_from"}. Every
read-modify-write happens under an exclusive `flock` on `<dir>/lease.lock`, so two
controllers starting together cannot both win; the JSON is replaced atomically (a
temporary file renamed over it), so a reader never sees half of it. A holder that
crashed stops renewing, and the lease is free once it expires. A person takes over with
`force`: the lease passes to them whoever holds it, and the controller that held it finds
it lost at its next renewal and stops.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path


class LeaseHeld(RuntimeError):
    """Another holder has the lease; the message says who and until when."""


@dataclass(frozen=True)
class Lease:
    holder: str
    acquired: float
    expires: float
    taken_over_from: str = ""


def write_json_atomically(path: Path, document: dict) -> None:
    """Write to a temporary file, fsync it, rename it over `path`, fsync the directory."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class LeaseFile:
    def __init__(self, directory: str | Path, seconds: float):
        if seconds <= 0:
            raise ValueError(f"lease seconds must be positive, got {seconds}")
        self.directory, self.seconds = Path(directory), seconds
        self.path = self.directory / "lease.json"

    @contextmanager
    def _locked(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "lease.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> Lease | None:
        try:
            found = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return Lease(**found)

    def acquire(self, holder: str, force: bool = False, now: float | None = None) -> Lease:
        """The lease for `holder` (renewed if it holds it already); LeaseHeld when another
        holds an unexpired one and `force` is not set."""
        now = time.time() if now is None else now
        with self._locked():
            current = self.read()
            taken_from = ""
            if current and current.holder != holder and current.expires > now:
                if not force:
                    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(current.expires))
                    raise LeaseHeld(f"the loop is held by {current.holder} until {until}")
                taken_from = current.holder
            acquired = current.acquired if current and current.holder == holder else now
            lease = Lease(holder, acquired, now + self.seconds, taken_from)
            write_json_atomically(self.path, asdict(lease))
            return lease

    def holds(self, holder: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        current = self.read()
        return bool(current and current.holder == holder and current.expires > now)

    def release(self, holder: str) -> None:
        """Gives the lease up if `holder` has it (a lease taken over is left alone)."""
        with self._locked():
            current = self.read()
            if current and current.holder == holder:
                self.path.unlink()
