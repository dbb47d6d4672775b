"""Small readers the integration tests share."""
from __future__ import annotations

import csv
from pathlib import Path

from services.router.experiments import ExperimentConfig
from libs import config as config_lib
from tests.conftest import ROOT


def rated_items(workdir: Path, user_id: str) -> set[str]:
    with open(workdir / "data" / "raw" / "ratings.csv", newline="") as f:
        return {r["item_id"] for r in csv.DictReader(f) if r["user_id"] == user_id}


def catalog_items(workdir: Path) -> set[str]:
    with open(workdir / "data" / "raw" / "items.csv", newline="") as f:
        return {r["item_id"] for r in csv.DictReader(f)}


def user_in_arm(arm: str, users=range(1, 301)) -> str:
    experiments = config_lib.load(ExperimentConfig, ROOT / "services/router/experiments.yaml")
    return next(str(u) for u in users if experiments.assign(str(u)).name == arm)


def newest_version(workdir: Path, model: str) -> int:
    return max(int(p.name) for p in (workdir / "model_repo" / model).iterdir()
               if p.name.isdigit())
