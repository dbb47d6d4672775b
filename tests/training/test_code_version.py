"""The code a run records: the commit, whether the tree had uncommitted changes, the lock
files' hashes; inside an image without git, the image's version and revision."""
import hashlib
import subprocess

from pipelines.training import code_version


def git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_the_commit_uncommitted_changes_and_lock_hashes_are_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("RECSYS_IMAGE_VERSION", raising=False)
    monkeypatch.delenv("RECSYS_IMAGE_REVISION", raising=False)
    (tmp_path / "requirements").mkdir()
    lock = tmp_path / "requirements" / "training.lock"
    lock.write_text("tensorflow==2.16.2\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "x")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    clean = code_version.describe(tmp_path)
    assert clean == {"commit": head, "dirty": False, "image": None,
                     "locks": {"requirements/training.lock":
                               hashlib.sha256(b"tensorflow==2.16.2\n").hexdigest()}}
    lock.write_text("tensorflow==2.17.0\n")
    (tmp_path / "notes.txt").write_text("untracked files do not count")
    changed = code_version.describe(tmp_path)
    assert changed["dirty"] is True and changed["commit"] == head
    assert changed["locks"] != clean["locks"]


def test_in_an_image_without_git_the_image_names_the_code(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_IMAGE_VERSION", "0.1.0")
    monkeypatch.setenv("RECSYS_IMAGE_REVISION", "4f2a9c1")
    assert code_version.describe(tmp_path) == {
        "commit": "4f2a9c1", "dirty": None, "locks": {},
        "image": {"version": "0.1.0", "revision": "4f2a9c1"}}
