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


@dataclass
class Image:
    """A container image and the targets that ship in it."""
    ref: str  # registry/name:version
    dockerfile: str
    targets: list[Target]

    @property
    def name(self) -> str:
        return self.ref.rsplit("/", 1)[-1].split(":")[0]

    @property
    def version(self) -> str:
        return self.ref.rsplit(":", 1)[1]

    @property
    def env(self) -> str:
        return self.targets[0].env


def images(targets: dict[str, Target]) -> dict[str, Image]:
    """Every image BUILD names, by reference. An image has a tag and one Dockerfile, and
    all its targets run in one environment (training or serving)."""
    found: dict[str, Image] = {}
    for target in targets.values():
        if bool(target.image) != bool(target.dockerfile):
            raise ValueError(f"BUILD: {target.name} needs both `image` and `dockerfile`")
        if not target.image:
            continue
        if ":" not in target.image.rsplit("/", 1)[-1]:
            raise ValueError(f"BUILD: {target.name}: image {target.image} has no version tag")
        image = found.setdefault(target.image, Image(target.image, target.dockerfile, []))
        if target.dockerfile != image.dockerfile:
            raise ValueError(f"BUILD: {target.image} is built from both {image.dockerfile} "
                             f"and {target.dockerfile}")
        if target.env not in {"training", "serving"} or (image.targets and
                                                          target.env != image.env):
            raise ValueError(f"BUILD: {target.image} needs one environment, training or "
                             f"serving ({target.name}: {target.env})")
        image.targets.append(target)
    return found


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
