"""Reads BUILD, the monorepo's build manifest."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"proto_library", "py_library", "service", "pipeline", "test_suite", "load_test",
         "tool", "manifests"}


@dataclass
class Target:
    name: str
    kind: str
    srcs: list[str]
    env: str
    entry: str = ""
    config: str = ""
    deps: list[str] = field(default_factory=list)
    image: str = ""
    dockerfile: str = ""


def load(path: Path = ROOT / "BUILD") -> dict[str, Target]:
    raw = yaml.safe_load(path.read_text())["targets"]
    return {name: Target(name=name, **spec) for name, spec in raw.items()}


def services_in_start_order(targets: dict[str, Target]) -> list[Target]:
    """Services ordered so every service starts after the services it depends on."""
    services = {n: t for n, t in targets.items() if t.kind == "service"}
    ordered: list[Target] = []

    def visit(name: str, path: tuple[str, ...] = ()) -> None:
        if name in path:
            raise ValueError(f"BUILD: dependency cycle {' -> '.join(path + (name,))}")
        if any(t.name == name for t in ordered):
            return
        for dep in services[name].deps:
            if dep in services:
                visit(dep, path + (name,))
        ordered.append(services[name])

    for name in sorted(services):
        visit(name)
    return ordered
