"""Small files that several writers share: replaced whole, locked, appended line by line.

  replace_atomically  write a temporary file beside it, fsync, rename it over the old one:
                      a reader sees the old content or the new, never half
  locked              an exclusive flock on a lock file, for read-modify-write cycles
                      between processes
  append_line         one line appended and fsynced before returning (audit logs)
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


def replace_atomically(path: Path, text: str, mode: int | None = None) -> None:
    """`path` holds `text` afterwards (with `mode`, if given), or is left as it was."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


@contextmanager
def locked(lock_path: Path):
    """Holds an exclusive lock on `lock_path` (created if missing) for the block."""
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())
