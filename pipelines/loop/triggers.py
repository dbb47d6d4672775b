"""Why the loop retrains: the drift check found drift (drift.json), a served version fell
below its promise (quality.json), or the last retraining is older than the schedule.

A report counts once: one written before the last retraining finished was acted upon
already (or described data that retraining has since seen). A report not written yet (a
loop deployed before the check's first run) triggers nothing; `due` says so.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

DAY = 86_400


class ReportError(ValueError):
    """A report is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Trigger:
    kind: str  # drift | quality | schedule
    reason: str
    report: str = ""  # the report it came from, for the lineage
    detected_at: float = 0.0  # when that report was written (the schedule: when due)

    def to_dict(self) -> dict:
        return asdict(self)


def _report(path: Path) -> tuple[dict, float]:
    """(the report, when it was generated)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        generated = datetime.fromisoformat(
            document["generated_at"].replace("Z", "+00:00")).timestamp()
    except FileNotFoundError:
        raise ReportError(f"{path}: no such report") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: cannot read: {err}") from None
    except (KeyError, AttributeError, ValueError):
        raise ReportError(f"{path}: field 'generated_at' is missing or not a time") from None
    return document, generated


def drift(path: Path, last_retrain: float) -> Trigger | None:
    document, generated = _report(path)
    if generated <= last_retrain or not document.get("drift"):
        return None
    found = [f"{r['feature']} ({r['check']})" for r in document.get("results", [])
             if r.get("detected")]
    return Trigger("drift", f"drift in {', '.join(found) or 'the report'}", str(path),
                   generated)


def quality(path: Path, last_retrain: float) -> Trigger | None:
    document, generated = _report(path)
    if generated <= last_retrain or not document.get("below_promise"):
        return None
    below = [f"{v['model']} {v['version']} {v['metric']} {v['online']:.4g} < promise "
             f"{v['promise']:.4g}" for v in document.get("verdicts", [])
             if v.get("status") == "below"]
    return Trigger("quality", f"below its promise: {'; '.join(below)}", str(path), generated)


def schedule(last_retrain: float, every_days: float, now: float) -> Trigger | None:
    if every_days <= 0 or now - last_retrain < every_days * DAY:
        return None
    since = "never retrained" if not last_retrain else \
        f"last retrained {(now - last_retrain) / DAY:.1f} days ago"
    return Trigger("schedule", f"{since}; the schedule is every {every_days:g} days",
                   detected_at=last_retrain + every_days * DAY if last_retrain else now)


def due(drift_report: Path | None, quality_report: Path | None, last_retrain: float,
        every_days: float, now: float, note=print) -> list[Trigger]:
    """Every trigger that holds now; a report path that is None is not watched, one that
    does not exist yet is noted and skipped."""
    found = []
    for path, check in ((drift_report, drift), (quality_report, quality)):
        if path is None:
            continue
        if not path.exists():
            note(f"{check.__name__}: no report at {path} yet")
            continue
        found.append(check(path, last_retrain))
    found.append(schedule(last_retrain, every_days, now))
    return [t for t in found if t is not None]
