"""The drift check end to end: generated data landed as the batch job reads it, a
training set and model card as the pipeline leaves them, exposure logs written by the
router's own writer, the CLI as the CronJob runs it, and a real Pushgateway."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from libs import feature_spec
from pipelines.data import movielens, sources, synthetic
from pipelines.data.dataset import Dataset
from pipelines.monitoring import check
from services.router.exposure_log import ExposureLog
from tests.conftest import ROOT
from tests.integration.helpers import scraped
from tools.stack import service_env

DAY = 86_400
T0 = 880_000_000  # 1997-11-20, where MovieLens and the generator put their ratings
SPLIT = T0 + 60 * DAY  # reference: 60 days before it; recent: 30 days after
WINDOWS = ["--until", str(T0 + 90 * DAY), "--recent-days", "30", "--reference-days", "60"]


def generated(shift=None, seed=7) -> Dataset:
    """Ratings spread evenly over the 90 days, so both windows are alike unless
    `shift(recent ratings, items)` changes the recent one."""
    data = synthetic.generate(600, 500, 30_000, seed=seed)
    rng = np.random.default_rng(seed)
    ratings = data.ratings.assign(timestamp=T0 + rng.integers(0, 90 * DAY, len(data.ratings)))
    if shift:
        recent = ratings.timestamp >= SPLIT
        ratings = pd.concat([ratings[~recent], shift(ratings[recent], data.items)])
    return Dataset(data.users, data.items, ratings, "generated")


def evenings_only(ratings, _items):
    """Every recent rating moved to 20:00-23:59 of its own day."""
    day_start = ratings.timestamp // DAY * DAY
    return ratings.assign(timestamp=day_start + 20 * 3600 + ratings.timestamp % (4 * 3600))


def old_films_only(ratings, items):
    old = set(items.item_id[items.release_year < 1980])
    return ratings[ratings.item_id.isin(old)]


def drift_check(workdir, *argv) -> tuple[int, dict]:
    out = workdir / "report"
    code = check.main(["--workdir", str(workdir), "--out", str(out), *argv])
    return code, json.loads((out / "drift.json").read_text())


def detected(report: dict) -> set[str]:
    return {r["feature"] for r in report["results"] if r["detected"]}


def serve_training_set(workdir, data: Dataset) -> None:
    """What `make train` leaves: a training set of the reference period and the model
    card of the served ranking version naming it."""
    rows = data.ratings[data.ratings.timestamp < SPLIT].merge(data.users, on="user_id") \
        .merge(data.items, on="item_id")[list(feature_spec.STORED_FEATURES)]
    span = workdir / "data" / "training_sets" / f"span-{rows.timestamp.max()}"
    span.mkdir(parents=True)
    rows.to_parquet(span / "ratings.parquet", index=False)
    (span / "snapshot.json").write_text(json.dumps({"span": int(rows.timestamp.max())}))
    version = workdir / "model_repo" / "ranking" / "3"
    version.mkdir(parents=True)
    (version / "model_card.md").write_text(f"| training set | `{span}` |\n"
                                           f"| span | {rows.timestamp.max()} |\n")


def test_the_same_distribution_shows_no_drift_against_the_served_training_set(tmp_path):
    data = generated()
    sources.land(data, tmp_path / "data" / "raw")
    serve_training_set(tmp_path, data)
    code, report = drift_check(tmp_path, "--checks", "features,label", *WINDOWS)
    assert code == 0, report
    assert detected(report) == set()
    assert "ranking version 3: the newest ranking version the model server has" in \
        report["sources"]["features"]
    names = {r["feature"] for r in report["results"]}
    assert names == {"user_id", "age", "gender", "occupation", "item_id", "genres",
                     "release_year", "hour_of_day", "day_of_week", "rating"}
    assert (tmp_path / "report" / "drift.html").read_text().count("<svg") == 11


@pytest.mark.parametrize("shift, drifted, unchanged", [
    (evenings_only, {"hour_of_day"}, {"day_of_week", "age", "item_id", "rating"}),
    (old_films_only, {"release_year"}, {"hour_of_day", "day_of_week", "occupation"}),
])
def test_a_shifted_feature_is_detected_on_that_feature(tmp_path, shift, drifted, unchanged):
    sources.land(generated(shift), tmp_path / "data" / "raw")
    code, report = drift_check(tmp_path, "--checks", "features,label",
                               "--reference-set", "window", *WINDOWS)
    assert code == 1
    assert drifted <= detected(report) and not unchanged & detected(report), \
        detected(report)
    if shift is evenings_only:  # moving the clock changes nothing else
        assert detected(report) == {"hour_of_day"}


def write_exposures(directory, start, count, score_mean, fallback_share, seed):
    """`count` responses spread over 30 days, through the router's writer."""
    rng = np.random.default_rng(seed)
    log = ExposureLog(directory, fsync_seconds=3600)
    for n, t in enumerate(np.sort(start + rng.uniform(0, 30 * DAY, count))):
        fallback = bool(rng.random() < fallback_share)
        # fallbacks serve popular items scored by counts: another scale, left out
        scores = [250.0] * 10 if fallback else \
            np.round(rng.normal(score_mean, 0.4, 10), 4).tolist()
        log.write({"request_id": f"r{seed}-{n}", "timestamp": round(float(t), 3),
                   "user_id": str(n % 300), "config_version": "v1", "assignments": [],
                   "model_versions": {"retrieval": 1, "ranking": 0 if fallback else 1},
                   "items": [str(i) for i in range(10)], "scores": scores,
                   "fallback": fallback, "latency_ms": 12.5})
    log.close()


def test_the_cronjob_run_pushes_every_score_to_the_pushgateway(tmp_path, pushgateway):
    sources.land(generated(evenings_only), tmp_path / "data" / "raw")
    exposures = tmp_path / "exposures"
    write_exposures(exposures, T0 + 30 * DAY, 3000, 3.6, 0.02, seed=1)  # reference
    write_exposures(exposures, SPLIT, 3000, 3.2, 0.02, seed=2)  # recent: lower scores
    out = tmp_path / "report"
    started = time.time()
    finished = subprocess.run(
        [sys.executable, "-m", "pipelines.monitoring.check", "--workdir", str(tmp_path),
         "--reference-set", "window", *WINDOWS, "--out", str(out),
         "--pushgateway", pushgateway],
        cwd=ROOT, env=service_env(), capture_output=True, text=True, timeout=120)
    assert finished.returncode == 1, finished.stderr
    assert "DRIFT" in finished.stdout and finished.stderr == ""
    report = json.loads((out / "drift.json").read_text())
    assert detected(report) == {"hour_of_day", "score"}

    series = scraped(pushgateway, "recsys_drift")
    job = ("job", "recsys_drift")
    for r in report["results"]:
        key = (("check", r["check"]), ("feature", r["feature"]), job)
        assert series[("recsys_drift_detected", key)] == float(r["detected"])
        for method, score in r["scores"].items():
            labels = tuple(sorted(key + (("method", method),)))
            assert series[("recsys_drift_score", labels)] == pytest.approx(score)
            assert series[("recsys_drift_threshold", labels)] == r["thresholds"][method]
    fallback = (("check", "predictions"), ("feature", "fallback"), job, ("method", "share_diff"))
    assert series[("recsys_drift_threshold", fallback)] == 0.05
    assert series[("recsys_drift_score", fallback)] < 0.05
    assert started <= series[("recsys_drift_last_run_timestamp_seconds", (job,))] <= time.time()
    per_feature = [k for k in series if k[0] == "recsys_drift_detected"]
    assert len(per_feature) == 12  # 9 features, the label, the scores, the fallbacks


@pytest.mark.skipif(movielens.default_dir() is None, reason="MovieLens 100K not present")
def test_movielens_first_60_days_against_the_last_30(tmp_path):
    sources.land(movielens.load(movielens.default_dir()), tmp_path / "data" / "raw")
    code, report = drift_check(tmp_path, "--checks", "features,label", "--reference-set",
                               "window", "--reference-from", "1997-09-20",
                               "--reference-days", "60", "--until", "latest",
                               "--recent-days", "30")
    assert code == 1
    # the users of spring 1998 are not those of autumn 1997; what they rated and how
    # they rated it barely moved
    assert {"user_id", "age"} <= detected(report)
    assert not {"gender", "item_id", "genres", "rating"} & detected(report)
