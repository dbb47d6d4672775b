"""Time windows the drift check compares, and the error every bad input raises.

Windows are half-open, [start, end) in seconds since the epoch (UTC). The recent window
ends at --until and lasts --recent-days; the reference window lasts --reference-days and
ends where the recent one starts, or starts at --reference-from.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from pipelines.experiments import exposures

DAY = 86_400


# Bad input (a missing file, an empty window, a malformed line): the message names it; the
# CLI prints it on one line and exits with code 2. The same class as the experiment
# analysis', whose exposure-log reader the drift check shares.
InputError = exposures.InputError


@dataclass(frozen=True)
class Window:
    name: str  # "reference" | "recent"
    start: float
    end: float

    def __str__(self) -> str:
        return f"{self.name} window {iso(self.start)} .. {iso(self.end)}"

    def holds(self, seconds):
        """Works on a number or on a numpy/pandas array of them."""
        return (seconds >= self.start) & (seconds < self.end)

    def to_dict(self) -> dict:
        return {"start": iso(self.start), "end": iso(self.end),
                "start_seconds": self.start, "end_seconds": self.end}


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_when(text: str, flag: str) -> float:
    """Seconds since the epoch from "now", epoch seconds, or an ISO 8601 date or time
    (UTC unless it names a zone). "latest" is resolved by the caller, per data source."""
    if text == "now":
        return time.time()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected now, latest, epoch seconds or an ISO "
                         "8601 date/time such as 2024-05-01 or 2024-05-01T06:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def windows(until: float, recent_days: float, reference_days: float,
            reference_from: float | None = None) -> tuple[Window, Window]:
    """(reference, recent)."""
    for flag, days in (("--recent-days", recent_days), ("--reference-days", reference_days)):
        if days <= 0:
            raise InputError(f"{flag} must be positive, got {days}")
    recent = Window("recent", until - recent_days * DAY, until)
    start = recent.start - reference_days * DAY if reference_from is None else reference_from
    reference = Window("reference", start, start + reference_days * DAY)
    if reference.end > recent.start:
        raise InputError(f"{reference} overlaps the {recent}")
    return reference, recent
