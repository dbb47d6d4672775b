"""BUILD cannot go stale: every target points at real code, every deployable has a target."""
from pathlib import Path

from tools import build_manifest
from tests.conftest import ROOT

TARGETS = build_manifest.load()


def test_every_target_is_well_formed():
    for target in TARGETS.values():
        assert target.kind in build_manifest.KINDS, target.name
        assert target.env in {"training", "serving", "both"}, target.name
        for src in target.srcs:
            assert (ROOT / src).exists(), f"{target.name}: {src} does not exist"
        for dep in target.deps:
            assert dep in TARGETS, f"{target.name}: unknown dependency {dep}"
        if target.entry:
            module = ROOT / Path(*target.entry.split("."))
            assert module.with_suffix(".py").is_file(), f"{target.name}: no {target.entry}"
        if target.config:
            assert (ROOT / target.config).is_file(), f"{target.name}: no {target.config}"


def test_every_service_folder_and_test_suite_has_a_target():
    services = {f"services/{p.name}" for p in (ROOT / "services").iterdir()
                if (p / "main.py").is_file()}
    assert services == {n for n, t in TARGETS.items() if t.kind == "service"}
    suites = {f"tests/{p.name}" for p in (ROOT / "tests").iterdir()
              if p.is_dir() and any(p.glob("test_*.py"))}
    assert suites == {n for n, t in TARGETS.items() if t.kind == "test_suite"}


def test_services_start_after_what_they_call():
    order = [t.name for t in build_manifest.services_in_start_order(TARGETS)]
    assert order.index("services/model_server") < order.index("services/candidate")
    assert order.index("services/candidate") < order.index("services/router")
    assert order.index("services/ranking") < order.index("services/router")
