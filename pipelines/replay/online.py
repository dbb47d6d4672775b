"""The replay's answers judged as the online quality check judges a served version
(pipelines/monitoring/quality.py): the router's exposure log of the replay, and the
ratings after the cut as the delayed labels, each moved to follow its user's answer by as
long as it followed the cut. What it shows: whether a version's offline promise
(evaluation.json) holds on what users did next, or the check would cry wolf.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipelines.experiments import exposures as exposure_log
from pipelines.monitoring import quality, quality_check

DAY = 86_400


# a replay cut has a few hundred returning users, not a day's traffic: judged on fewer
REPLAY_SETTINGS = quality.Settings(min_samples=30)


def judge(workdir: Path, after: pd.DataFrame, cut: int,
          settings: quality.Settings = REPLAY_SETTINGS) -> list[dict]:
    """The verdicts (quality.judge) on the answers in `workdir/exposures`; `after`: the
    ratings after the cut (user_id, item_id, rating, timestamp)."""
    exposures = exposure_log.read_exposures(workdir / "exposures")
    answered = exposures.groupby("user_id").timestamp.min()
    rows = after[after.user_id.isin(answered.index)]
    outcomes = pd.DataFrame({
        "user_id": rows.user_id, "item_id": rows.item_id.astype(str),
        "timestamp": rows.user_id.map(answered) + (rows.timestamp - cut),
        "value": rows.rating.astype(float), "request_id": None, "event_id": None,
        "type": "rating"})
    start = float(exposures.timestamp.min())
    until = float(exposures.timestamp.max()) + settings.label_seconds + 1
    figures = quality.measure(exposures, outcomes, start, until, None, settings)
    promises, _ = quality_check.promises(workdir, figures)
    return quality.judge(figures, promises, settings)
