"""Reads the router's exposure log and the outcome events, checks every record, and
attributes each outcome to the exposure that caused it.

Exposure log (JSON Lines, one record per Recommend response):
  {"request_id", "timestamp", "user_id", "config_version",
   "assignments": [{"layer", "experiment", "arm"}],
   "model_versions": {"retrieval", "ranking"} (0: that model did not answer),
   "items": [served item ids, in order], "scores" and "sources" (optional, one per item),
   "fallback", "latency_ms"}
Outcome events (JSON Lines, or CSV with the same columns), as the router's outcome log
(services/router/outcomes.py) writes them:
  {"user_id", "item_id", "timestamp", "value", "request_id" (optional),
   "event_id" (optional: an event logged twice counts once), "type" (optional:
   impression, click, play or rating; the reader keeps the types asked for, by default
   every engagement, not impressions)}

An outcome with a request_id joins to that exposure; one without joins to the same user's
latest exposure, at or before it and within the attribution window, that served its item.
Any malformed input raises InputError naming the file, the line and the field.
"""
from __future__ import annotations

import csv
import glob
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

DEFAULT_WINDOW_SECONDS = 24 * 3600
OUTCOME_COLUMNS = ("user_id", "item_id", "timestamp", "value", "request_id", "event_id",
                   "type")
OUTCOME_TYPES = ("impression", "click", "play", "rating")
ENGAGEMENTS = ("click", "play", "rating")


class InputError(ValueError):
    """A log is missing or malformed; the message names the file, line and field."""


def paths_of(spec: str | Path) -> list[Path]:
    """A file, a directory (its *.jsonl and *.csv files) or a glob pattern."""
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".csv"))
        if not found:
            raise InputError(f"{path}: directory holds no .jsonl or .csv files")
        return found
    if path.is_file():
        return [path]
    matches = sorted(Path(p) for p in glob.glob(str(spec)) if Path(p).is_file())
    if not matches:
        raise InputError(f"{spec}: no such file")
    return matches


def json_lines(path: Path) -> Iterable[tuple[str, dict]]:
    """(where, record) of every non-empty line of a JSONL log; InputError names the line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read: {err}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object")
        yield where, record


def _field(record: dict, name: str, kinds: tuple, where: str, required: bool = True):
    if name not in record or record[name] is None:
        if required:
            raise InputError(f"{where}: field {name!r} is missing")
        return None
    value = record[name]
    # bool is an int in Python; a true/false where a number belongs is still an error
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise InputError(f"{where}: field {name!r} must be {expected}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{where}: field {name!r} must be finite, got {value!r}")
    return value


def parse_exposure(record: dict, where: str) -> dict:
    assignments = {}
    for i, entry in enumerate(_field(record, "assignments", (list,), where)):
        at = f"{where}: assignments[{i}]"
        if not isinstance(entry, dict):
            raise InputError(f"{at}: expected an object with layer, experiment, arm")
        assignments[_field(entry, "experiment", (str,), at)] = _field(entry, "arm", (str,), at)
        _field(entry, "layer", (str,), at)
    items = _field(record, "items", (list,), where)
    if not set(map(type, items)) <= {str, int}:  # map(type): 3x a generator's speed
        raise InputError(f"{where}: field 'items' must list item ids (strings)")
    versions = _field(record, "model_versions", (dict,), where, required=False) or {}
    for model in ("retrieval", "ranking"):
        _field(versions, model, (int,), f"{where}: model_versions", required=False)
    per_item = {}
    for name, kinds in (("scores", {int, float}), ("sources", {str})):
        values = _field(record, name, (list,), where, required=False)
        if values is None:
            continue
        if len(values) != len(items) or not set(map(type, values)) <= kinds:
            raise InputError(f"{where}: field {name!r} must hold one "
                             f"{'number' if float in kinds else 'string'} per item")
        per_item[name] = values
    return {"request_id": _field(record, "request_id", (str,), where),
            "timestamp": float(_field(record, "timestamp", (int, float), where)),
            "user_id": _field(record, "user_id", (str,), where),
            "config_version": _field(record, "config_version", (str,), where),
            "assignments": assignments,
            "items": [str(i) for i in items],
            "fallback": _field(record, "fallback", (bool,), where),
            "latency_ms": float(_field(record, "latency_ms", (int, float), where)),
            "retrieval_version": versions.get("retrieval") or 0,
            "ranking_version": versions.get("ranking") or 0,
            "scores": [float(v) for v in per_item.get("scores", [])],
            "sources": per_item.get("sources", [])}


def parse_outcome(record: dict, where: str) -> dict:
    request_id = _field(record, "request_id", (str,), where, required=False)
    item = _field(record, "item_id", (str, int), where)
    kind = _field(record, "type", (str,), where, required=False)
    if kind is not None and kind not in OUTCOME_TYPES:
        raise InputError(f"{where}: field 'type' must be one of {', '.join(OUTCOME_TYPES)}, "
                         f"got {kind!r}")
    return {"user_id": _field(record, "user_id", (str,), where), "item_id": str(item),
            "timestamp": float(_field(record, "timestamp", (int, float), where)),
            "value": float(_field(record, "value", (int, float), where)),
            "request_id": request_id or None,
            "event_id": _field(record, "event_id", (str,), where, required=False) or None,
            "type": kind}


def exposures_frame(records: Iterable[tuple[str, dict]]) -> pd.DataFrame:
    """(where, record) pairs -> one row per exposure; the first of a repeated request_id
    is kept (a log shipped twice must not count twice)."""
    rows = [parse_exposure(record, where) for where, record in records]
    frame = pd.DataFrame(rows, columns=["request_id", "timestamp", "user_id",
                                        "config_version", "assignments", "items",
                                        "fallback", "latency_ms", "retrieval_version",
                                        "ranking_version", "scores", "sources"])
    return frame.drop_duplicates("request_id").reset_index(drop=True)


def outcomes_frame(records: Iterable[tuple[str, dict]],
                   types: Iterable[str] = ENGAGEMENTS) -> pd.DataFrame:
    """(where, record) pairs -> one row per outcome of `types` (or without a type); an
    event id seen again (a retry that reached two routers) is dropped."""
    rows = [parse_outcome(record, where) for where, record in records]
    frame = pd.DataFrame(rows, columns=list(OUTCOME_COLUMNS))
    frame = frame[frame.type.isna() | frame.type.isin(list(types))]
    repeated = frame.event_id.notna() & frame.duplicated("event_id")
    return frame[~repeated].reset_index(drop=True)


def _csv_records(path: Path) -> Iterable[tuple[str, dict]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"user_id", "item_id", "timestamp", "value"} - set(reader.fieldnames or [])
            if missing:
                raise InputError(f"{path}:1: CSV header lacks {sorted(missing)}")
            for number, row in enumerate(reader, start=2):
                where = f"{path}:{number}"
                record = {"user_id": row["user_id"], "item_id": row["item_id"],
                          "request_id": row.get("request_id") or None,
                          "event_id": row.get("event_id") or None,
                          "type": row.get("type") or None}
                for name in ("timestamp", "value"):
                    try:
                        record[name] = float(row[name])
                    except (TypeError, ValueError):
                        raise InputError(f"{where}: field {name!r} is not a number: "
                                         f"{row[name]!r}") from None
                yield where, record
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err}") from None


def read_exposures(spec: str | Path) -> pd.DataFrame:
    paths = paths_of(spec)
    frame = exposures_frame(r for path in paths for r in json_lines(path))
    if frame.empty:
        raise InputError(f"{spec}: the exposure log has no records")
    return frame


def read_outcomes(spec: str | Path, types: Iterable[str] = ENGAGEMENTS) -> pd.DataFrame:
    paths = paths_of(spec)
    return outcomes_frame((r for path in paths for r in
                           (_csv_records(path) if path.suffix == ".csv" else json_lines(path))),
                          types)


@dataclass
class Joined:
    outcomes: pd.DataFrame  # the outcomes that joined, with the exposure's request_id
    by_request_id: int
    by_window: int
    unjoined: int


def join(exposures: pd.DataFrame, outcomes: pd.DataFrame,
         window_seconds: float = DEFAULT_WINDOW_SECONDS) -> Joined:
    """Attribute outcomes to exposures (see the module docstring)."""
    columns = ["user_id", "item_id", "timestamp", "value", "request_id"]
    if outcomes.empty:
        return Joined(pd.DataFrame(columns=columns), 0, 0, 0)
    known = set(exposures.request_id)
    has_id = outcomes.request_id.notna().to_numpy()
    direct = outcomes[has_id & outcomes.request_id.isin(known).to_numpy()]

    rest = outcomes[~has_id].sort_values("timestamp")
    # only the exposures of users with such outcomes are exploded (a day: millions)
    candidates = exposures[exposures.user_id.isin(set(rest.user_id))]
    served = candidates[["request_id", "user_id", "timestamp", "items"]].explode("items")
    served = served.rename(columns={"items": "item_id", "request_id": "exposure_id"})
    served = served.dropna(subset=["item_id"]).sort_values("timestamp")
    # the latest exposure of the same user and item at or before the outcome
    matched = pd.merge_asof(rest, served, on="timestamp", by=["user_id", "item_id"],
                            direction="backward", tolerance=float(window_seconds),
                            allow_exact_matches=True)
    matched = matched.dropna(subset=["exposure_id"])
    by_window = matched.assign(request_id=matched.exposure_id)[columns]
    joined = pd.concat([direct[columns], by_window], ignore_index=True)
    return Joined(joined, len(direct), len(by_window), len(outcomes) - len(joined))
