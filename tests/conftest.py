"""Shared test settings: paths, the two environments' interpreters, a real Redis."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINING_PYTHON = ROOT / ".venv" / "training" / "bin" / "python"
MOVIELENS = ROOT.parent / "shared" / "data" / "ml-100k"


def start_redis() -> tuple[str, subprocess.Popen]:
    """A real redis-server on a free loopback port, nothing persisted."""
    from tools import redis_server
    try:
        return redis_server.start()
    except RuntimeError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def redis_server():
    """One Redis for the session, stopped at its end."""
    from tools import redis_server as server
    address, process = start_redis()
    yield address
    server.stop(process)

