"""What the router served, per window, from its exposure log (services/router/
exposure_log.py: one JSON line per response, files `exposures-<UTC day>-<host>-<pid>.jsonl`).

Two signals: whether an answer fell back (`fallback`), and the scores of the items of
answers the ranking model scored (`model_versions.ranking` > 0 and no fallback). Other
answers' scores are on other scales (retrieval scores, popularity counts), so mixing
them in would make a change of traffic mix look like a change of the model.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipelines.experiments import exposures
from pipelines.monitoring.windows import DAY, InputError, Window

FILE_DAY = re.compile(r"-(\d{4}-\d{2}-\d{2})-")


@dataclass
class Served:
    """Responses in one window."""
    fallbacks: list[bool] = field(default_factory=list)
    scores: dict[int, list[float]] = field(default_factory=dict)  # by ranking version
    ranking_versions: Counter = field(default_factory=Counter)

    @property
    def responses(self) -> int:
        return len(self.fallbacks)


def _number(record: dict, name: str, where: str) -> float:
    value = record.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise InputError(f"{where}: field {name!r} must be a finite number, got {value!r}")
    return float(value)


def parse(record: dict, where: str) -> tuple[float, bool, int, list[float]]:
    """(timestamp, fallback, ranking model version, scores) of one exposure record."""
    if not isinstance(record.get("fallback"), bool):
        raise InputError(f"{where}: field 'fallback' must be true or false, "
                         f"got {record.get('fallback')!r}")
    versions = record.get("model_versions") or {}
    if not isinstance(versions, dict):
        raise InputError(f"{where}: field 'model_versions' must be an object")
    scores = record.get("scores") or []  # older lines carry no scores
    if not isinstance(scores, list):
        raise InputError(f"{where}: field 'scores' must be a list")
    for i in range(len(scores)):
        _number({"score": scores[i]}, "score", f"{where}: scores[{i}]")
    return (_number(record, "timestamp", where), record["fallback"],
            int(versions.get("ranking") or 0), [float(s) for s in scores])


def day_overlaps(path: Path, windows: list[Window]) -> bool:
    """Files named by their UTC day hold that day's lines only: skip the others unread."""
    found = FILE_DAY.search(path.name)
    if not found:
        return True
    start = datetime.fromisoformat(found.group(1)).replace(tzinfo=timezone.utc).timestamp()
    return any(start < w.end and start + DAY > w.start for w in windows)


def log_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise InputError(f"{directory}: no exposure log directory (the router's "
                         "exposure_log_dir; --exposures DIR)")
    # shadow-*.jsonl are the shadow comparisons, another record
    return sorted(p for p in directory.glob("*.jsonl") if not p.name.startswith("shadow-"))


def latest(directory: Path) -> float:
    """The newest response's time (for --until latest): reads every file."""
    newest = -math.inf
    for path in log_files(directory):
        for where, record in exposures.json_lines(path):
            newest = max(newest, parse(record, where)[0])
    if newest == -math.inf:
        raise InputError(f"{directory}: the exposure log has no responses")
    return newest


def read(directory: Path, windows: list[Window]) -> dict[str, Served]:
    """Served per window name."""
    served = {w.name: Served() for w in windows}
    for path in log_files(directory):
        if not day_overlaps(path, windows):
            continue
        for where, record in exposures.json_lines(path):
            seconds, fallback, version, scores = parse(record, where)
            for window in windows:
                if window.holds(seconds):
                    into = served[window.name]
                    into.fallbacks.append(fallback)
                    if version > 0 and not fallback:
                        into.scores.setdefault(version, []).extend(scores)
                        into.ranking_versions[version] += 1
    return served


def samples(served: Served, version: int | None = None) -> dict[str, np.ndarray]:
    """The scores of one ranking version's answers (None: every version's), and every
    answer's fallback flag."""
    scores = [s for v, found in served.scores.items() if version in (None, v) for s in found]
    return {"score": np.array(scores, float),
            "fallback": np.array(served.fallbacks, float)}
