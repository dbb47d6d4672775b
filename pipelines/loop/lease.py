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

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from libs import files


class LeaseHeld(RuntimeError):
    """Another holder has the lease; the message says who and until when."""


@dataclass(frozen=True)
class Lease:
    holder: str
    acquired: float
    expires: float
    taken_over_from: str = ""


class LeaseFile:
    def __init__(self, directory: str | Path, seconds: float):
        if seconds <= 0:
            raise ValueError(f"lease seconds must be positive, got {seconds}")
        self.directory, self.seconds = Path(directory), seconds
        self.path = self.directory / "lease.json"

    def _locked(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        return files.locked(self.directory / "lease.lock")

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
            files.replace_atomically(self.path, json.dumps(asdict(lease), indent=2) + "\n")
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
