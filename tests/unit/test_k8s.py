"""The Kubernetes manifests render offline and agree with the services they deploy."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from libs import config as config_lib
from services.candidate.config import CandidateConfig
from services.ranking.config import RankingConfig
from services.router.config import RouterConfig
from services.router.experiments import ExperimentConfig
from services.model_server.config import ModelServerConfig, model_sources
from tests.conftest import ROOT
from tools import build_manifest

OVERLAYS = ["dev", "prod"]
SCHEMAS = {"router": RouterConfig, "candidate": CandidateConfig, "ranking": RankingConfig}
BASE = ROOT / "k8s" / "base"


def render(overlay: str) -> list[dict]:
    if not shutil.which("kubectl"):
        pytest.fail("kubectl (with kustomize) is needed to render the manifests")
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def containers(objects):
    for obj in objects:
        if obj["kind"] == "Deployment":
            spec = obj["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec["containers"]:
                yield obj, spec, c


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_with_hardened_pinned_workloads(overlay):
    objects = render(overlay)
    kinds = {(o["kind"], o["metadata"]["name"].split("-")[0]) for o in objects}
    for name in ("router", "candidate", "ranking", "tf"):
        assert ("Deployment", name) in kinds and ("Service", name) in kinds
    for obj, pod, c in containers(objects):
        where = f"{overlay}/{obj['metadata']['name']}/{c['name']}"
        image = c["image"]
        assert ":" in image and not image.endswith(":latest"), where
        assert c["resources"]["limits"] and c["resources"]["requests"], where
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["automountServiceAccountToken"] is False, where
        if c in pod["containers"] and c["name"] != "sync-models":
            assert "readinessProbe" in c and "livenessProbe" in c, where


def test_every_project_image_is_a_build_target_with_a_dockerfile():
    images = {t.image: t for t in build_manifest.load().values() if t.image}
    for overlay in OVERLAYS:
        for obj, _, c in containers(render(overlay)):
            if c["image"].startswith("ghcr.io/recsys-platform/"):
                assert c["image"] in images, f"{c['image']} has no BUILD target"
                assert (ROOT / images[c["image"]].dockerfile).is_file()


def test_cluster_configs_pass_the_service_schemas_and_match_the_ports():
    objects = {o["metadata"]["name"]: o for o in render("prod")}
    for name, schema in SCHEMAS.items():
        loaded = config_lib.load(schema, BASE / "config" / f"{name}.yaml")
        ports = {p["name"]: p["containerPort"] for p in
                 objects[name]["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert ports == {"grpc": loaded.port, "metrics": loaded.metrics_port}, name
        assert loaded.host == "0.0.0.0"
    router = config_lib.load(RouterConfig, BASE / "config" / "router.yaml")
    assert router.candidate_service == f"candidate:{CandidateConfig().port}"
    assert router.ranking_service == f"ranking:{RankingConfig().port}"
    for name in ("candidate", "ranking"):
        loaded = config_lib.load(SCHEMAS[name], BASE / "config" / f"{name}.yaml")
        assert loaded.model_server == "tf-serving:8500"
    config_lib.load(ExperimentConfig, BASE / "config" / "experiments.yaml")


def test_tf_serving_model_config_names_both_models():
    sources = model_sources(ModelServerConfig(
        model_config_file=str(BASE / "config" / "models.config")))
    assert {s.name for s in sources} == {"retrieval", "ranking"}
