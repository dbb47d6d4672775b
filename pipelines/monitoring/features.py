"""What the feature check compares, and where its two samples come from.

Features: the spec's (libs/feature_spec.py) user, item and context features as the model
reads them: strings as categories, genres as one category per genre (Transform
multi-hot encodes them), numbers as numbers, and the timestamp as hour of day and day of
week (UTC), which is all Transform keeps of it (time_of_week): the raw time always
"drifts". The label (rating) is compared too, as check `label`. The history feature
(rated_items) is not: it is derived after the train/eval split and is in no training set.

Reference: a training set (<workdir>/data/training_sets/span-S/ratings.parquet): by
default the ones the served versions of both models learnt from (served.py: the router's
defaults, the `stable` label), named in their model cards; one when both came from the
same run. Recent (and, with --reference-set
window, reference) rows: the landed ratings (<workdir>/data/raw/ratings.csv and the
stream worker's events/*.csv) in the window, joined to users.csv and items.csv, checked
by the batch job's own parsers; rows it would quarantine are skipped and counted.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from libs import feature_spec
from pipelines.data import prepare
from pipelines.data.dataset import DataError
from pipelines.features import batch_job, tables
from pipelines.monitoring.served import Served, served_versions
from pipelines.monitoring.windows import InputError, Window

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# training_set.SETS_DIR; not imported from there, which would load Feast
SETS_DIR = Path("data") / "training_sets"


@dataclass(frozen=True)
class Checked:
    name: str
    check: str  # "features" | "label" | "predictions"
    kind: str  # "numeric" | "categorical" | "share"


def catalogue() -> list[Checked]:
    """Every feature the feature and label checks compare, from the spec."""
    found = []
    for feature in feature_spec.FEATURES:
        if feature.entity == "history":
            continue
        if feature.encoding == "time_of_week":
            found += [Checked("hour_of_day", "features", "categorical"),
                      Checked("day_of_week", "features", "categorical")]
        elif feature.entity == "label":
            found.append(Checked(feature.name, "label", "numeric"))
        else:
            kind = "categorical" if feature.dtype == "string" else "numeric"
            found.append(Checked(feature.name, "features", kind))
    return found


PREDICTIONS = [Checked("score", "predictions", "numeric"),
               Checked("fallback", "predictions", "share")]


def values(rows: pd.DataFrame, name: str) -> np.ndarray | list:
    """One feature's sample from rows with the training set's columns."""
    seconds = rows["timestamp"].to_numpy(np.int64)
    if name == "hour_of_day":
        return (seconds // 3600) % 24
    if name == "day_of_week":  # the epoch was a Thursday
        return [WEEKDAYS[d] for d in ((seconds // 86_400) + 3) % 7]
    feature = feature_spec.BY_NAME[name]
    if feature.encoding == "multi_hot":
        separator = feature_spec.GENRE_SEPARATOR
        return [token for value in rows[name] for token in str(value).split(separator)]
    return rows[name].to_numpy()


def trained_on(workdir: Path, served: Served) -> Path:
    """The training set a served version learnt from, as its model card names it."""
    card = served.path / "model_card.md"
    if not card.is_file():
        raise InputError(f"{card}: no model card, which names the training set {served.model} "
                         f"version {served.version} learnt from; pass --reference-set")
    text = card.read_text()
    named = re.search(r"^\| training set \| `([^`]*)` \|", text, re.MULTILINE)
    span = re.search(r"^\| span \| (\d+) \|", text, re.MULTILINE)
    # the card holds the path at training time; a job mounting the workdir elsewhere
    # finds the same span under its own workdir
    places = [Path(named.group(1))] if named else []
    if span:
        places.append(workdir / SETS_DIR / f"span-{span.group(1)}")
    for path in places:
        if (path / "ratings.parquet").is_file():
            return path
    raise InputError(f"{card}: the training set it names is not there "
                     f"({named.group(1) if named else 'no path'}); pass --reference-set")


def serving_training_sets(workdir: Path, models_config: Path | None = None,
                          experiments: Path | None = None
                          ) -> list[tuple[Path, list[Served], str]]:
    """The training sets the served versions of both models learnt from (one when both
    came from the same run), each with the versions it taught and why; with no model in
    the repository, the newest training set, saying so."""
    by_set: dict[Path, list[Served]] = {}
    for served in served_versions(workdir, models_config, experiments).values():
        by_set.setdefault(trained_on(workdir, served), []).append(served)
    if by_set:
        return [(path, models, "; ".join(f"{s.model} version {s.version}: {s.why}"
                                          for s in models))
                for path, models in by_set.items()]
    try:
        newest = prepare.newest_training_set(workdir / SETS_DIR)
    except DataError as err:
        raise InputError(str(err)) from None
    return [(newest, [], f"newest training set: no model in {workdir / 'model_repo'}")]


def read_set(path: Path) -> pd.DataFrame:
    try:
        return prepare.read_training_set(path)[1]
    except DataError as err:
        raise InputError(str(err)) from None


def named_training_set(spec: str, workdir: Path) -> tuple[Path, str]:
    """A reference training set named on the command line: "newest" or a directory (a
    span, or a directory of spans: its newest)."""
    path = workdir / SETS_DIR if spec == "newest" else Path(spec)
    if not (path / "ratings.parquet").is_file():
        try:
            path = prepare.newest_training_set(path)
        except DataError as err:
            raise InputError(str(err)) from None
    return path, "named on the command line" if spec != "newest" else "newest training set"


def _parsed(path: str, parser, key: str) -> dict[str, dict]:
    """Rows by id as the batch job keeps them: parsed, the first of a repeated id."""
    rows = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                parsed = parser(row)
            except tables.RowError:
                continue
            rows.setdefault(parsed[key], parsed)
    return rows


class Landed:
    """The landed raw tables, read once; `window` gives one window's rows."""

    def __init__(self, raw_dir: Path):
        missing = [name for name in batch_job.RAW_TABLES.values()
                   if not (raw_dir / name).is_file()]
        if missing:  # said here: the batch job's own message names its flags, not ours
            raise InputError(f"{raw_dir}: no landed {', '.join(missing)} (`make features` "
                             "lands data; or --raw-dir DIR)")
        try:
            files = batch_job.raw_files(raw_dir)
        except DataError as err:
            raise InputError(str(err)) from None
        self.raw_dir = raw_dir
        self.users = _parsed(files["users"][0], tables.parse_user, "user_id")
        self.items = _parsed(files["items"][0], tables.parse_item, "item_id")
        frames = [pd.read_csv(path, dtype=str, keep_default_na=False)
                  for path in files["ratings"]]
        self.ratings = pd.concat(frames, ignore_index=True)
        self.seconds = pd.to_numeric(self.ratings["timestamp"], errors="coerce").to_numpy()

    @property
    def latest(self) -> float:
        if not np.isfinite(self.seconds).any():
            raise InputError(f"{self.raw_dir}: no rating has a timestamp")
        return float(np.nanmax(self.seconds))

    def window(self, window: Window) -> tuple[pd.DataFrame, int]:
        """(rows with the training set's columns, rows skipped as the batch job would)."""
        candidates = self.ratings[window.holds(self.seconds)]
        rows, skipped = [], 0
        for raw in candidates.to_dict("records"):
            try:
                rating = tables.parse_rating(raw)
            except tables.RowError:
                skipped += 1
                continue
            user, item = self.users.get(rating["user_id"]), self.items.get(rating["item_id"])
            if user is None or item is None:
                skipped += 1
                continue
            rows.append({**rating, **{k: user[k] for k in ("age", "gender", "occupation")},
                         "genres": item["genres"], "release_year": item["release_year"]})
        frame = pd.DataFrame(rows, columns=list(feature_spec.STORED_FEATURES))
        return frame, skipped
