"""What code trained a model: the git commit and whether the tree had uncommitted changes,
the hashes of the pinned environments' lock files, and the image when the pipeline runs
in one (its build sets RECSYS_IMAGE_VERSION and RECSYS_IMAGE_REVISION). The Trainers carry
it in their custom_config, so ML Metadata keeps it with each execution and `lineage model`
shows it next to the data and hyperparameters."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ("requirements/training.lock", "requirements/serving.lock")


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def describe(root: Path = ROOT) -> dict:
    """{commit, dirty, locks: {path: sha256}, image}; commit and dirty are None outside a
    git checkout (in an image: its revision stands for the commit)."""
    commit = _git(root, "rev-parse", "HEAD")
    changes = _git(root, "status", "--porcelain", "--untracked-files=no") \
        if commit else None
    version = os.environ.get("RECSYS_IMAGE_VERSION")
    return {
        "commit": commit or os.environ.get("RECSYS_IMAGE_REVISION"),
        "dirty": bool(changes) if changes is not None else None,
        "locks": {name: hashlib.sha256((root / name).read_bytes()).hexdigest()
                  for name in LOCKS if (root / name).is_file()},
        "image": {"version": version, "revision": os.environ.get("RECSYS_IMAGE_REVISION")}
        if version else None,
    }
