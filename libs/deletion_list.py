"""The deletion list: users erased on request (GDPR Art. 17), whom nothing may bring back.

Erasing a user removes their rows from every store (pipelines/privacy); this list keeps
them from coming back afterwards through a path that re-reads older or upstream data: the
batch feature job re-landing raw data, the stream worker receiving a late event, the
router publishing an outcome logged before the erasure. It holds the SHA-256 of each
erased id, one per line, not the id: a reader can test an id against it, not list whom it
names (ids from a small space can still be guessed, so the file stays as protected as the
data; it is kept because honouring the erasure requires it).

  <workdir>/privacy/deletion_list.txt
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from libs import files

FILE = Path("privacy") / "deletion_list.txt"


def digest(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


def path_in(workdir: str | Path) -> Path:
    return Path(workdir) / FILE


class DeletionList:
    """Reads the list once and again whenever the file changes (cheap to ask per event)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._stamp: tuple | None = None
        self._digests: frozenset[str] = frozenset()

    def digests(self) -> frozenset[str]:
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._digests = frozenset(read(self.path))
            self._stamp = stamp
        return self._digests

    def __contains__(self, user_id: str) -> bool:
        digests = self.digests()
        return bool(digests) and digest(user_id) in digests


def digests_in(workdir: str | Path) -> frozenset[str]:
    """The list of a workdir, for a job that reads it once."""
    return frozenset(read(path_in(workdir)))


def read(path: str | Path) -> list[str]:
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def add(path: str | Path, user_id: str) -> bool:
    """Adds the user (under a lock, atomically); False when already listed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.locked(path.with_name(path.name + ".lock")):
        listed = read(path)
        if digest(user_id) in listed:
            return False
        files.replace_atomically(path, "".join(f"{d}\n" for d in [*listed, digest(user_id)]),
                                 mode=0o600)
    return True
