"""Shared test settings: the repository root and the two environments' interpreters."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINING_PYTHON = ROOT / ".venv" / "training" / "bin" / "python"
MOVIELENS = ROOT.parent / "shared" / "data" / "ml-100k"
