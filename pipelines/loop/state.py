"""The loop's state, on disk so that a controller restarted mid-loop goes on where it
stopped, and its audit log, one JSON line per step with who took it and why.

`<dir>/state.json` (replaced atomically) and `<dir>/audit.jsonl` (appended, fsynced).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from libs import files

PHASES = ("idle", "training", "canary")


class StateError(ValueError):
    """state.json is malformed; the message names the file and the field."""


@dataclass
class LoopState:
    phase: str = "idle"
    since: float = 0.0  # when the phase began
    paused: bool = False  # a person is in charge: the controller only watches
    paused_by: str = ""
    pause_reason: str = ""
    trigger: list[dict] = field(default_factory=list)  # what started the current loop
    last_retrain: float = 0.0  # when the last retraining finished
    candidate: dict = field(default_factory=dict)  # model -> version the last run pushed
    canary: dict = field(default_factory=dict)  # the running canary: plan and progress


def load(directory: Path) -> LoopState:
    path = directory / "state.json"
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return LoopState()
    except (OSError, json.JSONDecodeError) as err:
        raise StateError(f"{path}: cannot read: {err}") from None
    known = {f.name for f in fields(LoopState)}
    unknown = sorted(set(found) - known)
    if unknown:
        raise StateError(f"{path}: unknown field {unknown[0]!r} (a newer controller's?)")
    state = LoopState(**found)
    if state.phase not in PHASES:
        raise StateError(f"{path}: field 'phase' must be one of {', '.join(PHASES)}, "
                         f"got {state.phase!r}")
    return state


def save(directory: Path, state: LoopState) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    files.replace_atomically(directory / "state.json", json.dumps(asdict(state), indent=2) + "\n")


def audit(directory: Path, actor: str, action: str, **details) -> dict:
    """Appends one step to audit.jsonl (fsynced before returning) and returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    entry = {"time": round(time.time(), 3), "actor": actor, "action": action, **details}
    files.append_line(directory / "audit.jsonl", json.dumps(entry, default=str))
    return entry


def history(directory: Path) -> list[dict]:
    path = directory / "audit.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            steps.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by a crash mid-write: that step was never taken
    return steps


def retraining_of(directory: Path, model: str, version: int) -> dict | None:
    """The loop's retraining that pushed `model` `version`: when, by whom, and why (the
    triggers, with the reports they came from); None when the loop did not push it."""
    steps = history(directory)
    for i, step in enumerate(steps):
        if step["action"] == "retrained" and step.get("pushed", {}).get(model) == version:
            started = next((s for s in reversed(steps[:i]) if s["action"] == "retrain"), {})
            return {"finished": step["time"], "started": started.get("time"),
                    "controller": step["actor"], "triggers": started.get("triggers", []),
                    "training_set": step.get("training_set")}
    return None


def canary_of(directory: Path, model: str, version: int) -> dict | None:
    """The loop's canary decision on `model` `version` (promoted or rolled back, why, with
    the last step's figures); None when the loop did not canary it."""
    for step in reversed(history(directory)):
        if step["action"] == "canary decided" and step["candidate"].get(model) == version:
            return {key: step.get(key) for key in
                    ("time", "outcome", "reasons", "experiment", "stable", "figures")}
    return None
