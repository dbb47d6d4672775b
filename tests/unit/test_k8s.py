"""The Kubernetes manifests render offline, are valid Kubernetes 1.32 objects, meet the
project's policy and agree with the services, jobs and images they deploy."""
from __future__ import annotations

import copy
import json
import os
import shlex
from functools import lru_cache
from pathlib import Path
from unittest import mock

import pytest

from libs import config as config_lib, grpc_server
from libs.experiments import ExperimentConfig
from libs.feature_store_config import FeatureStoreConfig
from pipelines.training.config import PipelineConfig
from services.candidate.config import CandidateConfig
from services.model_server.config import ModelServerConfig, model_sources
from services.ranking.config import RankingConfig
from services.router.config import RouterConfig
from tests.conftest import ROOT
from tools import build_manifest, manifests

OVERLAYS = manifests.OVERLAYS
SERVICES = {"router": RouterConfig, "candidate": CandidateConfig, "ranking": RankingConfig}
SERVING = ("router", "candidate", "ranking", "tf-serving")


@lru_cache(maxsize=None)
def _rendered(overlay: str) -> tuple:
    return tuple(manifests.overlay(overlay))


def render(overlay: str) -> list[dict]:
    return copy.deepcopy(list(_rendered(overlay)))


def find(objects, kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def config_map_file(objects, prefix: str, key: str) -> str:
    maps = [o for o in objects if o["kind"] == "ConfigMap"
            and o["metadata"]["name"].startswith(prefix)]
    assert len(maps) == 1, prefix
    return maps[0]["data"][key]


def load_config(cls, text: str, tmp_path: Path, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return config_lib.load(cls, path)


def dialled(address: str, service: dict) -> tuple[str, int]:
    """The host and port a client config dials. Clients resolve a headless Service by DNS
    (every pod's address) and balance per call; through a ClusterIP each long-lived
    connection would stay on one pod."""
    assert address.startswith("dns:///"), address
    assert service["spec"].get("clusterIP") == "None", service["metadata"]["name"]
    host, port = address.removeprefix("dns:///").split(":")
    return host, int(port)


@pytest.mark.parametrize("overlay", manifests.KUSTOMIZATIONS)
def test_every_object_is_valid_for_the_stated_kubernetes_version(overlay):
    objects = render(overlay)
    assert manifests.schema_errors(objects) == []
    # the validation is strict: a misspelt field or a wrong type is caught
    misspelt, mistyped = (find(render("prod"), "Deployment", "router"),
                          find(render("prod"), "Service", "router"))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProb"] = {}
    mistyped["spec"]["ports"][0]["port"] = "grpc-port"
    errors = manifests.schema_errors([misspelt, mistyped])
    assert len(errors) == 2 and "readinessProb" in errors[0] and "grpc-port" in errors[1]


@pytest.mark.parametrize("overlay", manifests.KUSTOMIZATIONS)
def test_every_workload_meets_the_policy(overlay):
    assert manifests.policy_violations(render(overlay)) == []


def test_the_policy_catches_each_kind_of_breach():
    objects = render("prod")
    router = find(objects, "Deployment", "router")
    pod = router["spec"]["template"]["spec"]
    main = pod["containers"][0]
    main["image"] = "ghcr.io/recsys-platform/router:latest"
    del main["resources"]["limits"]["memory"]
    main["securityContext"]["readOnlyRootFilesystem"] = False
    main["livenessProbe"] = {"tcpSocket": {"port": 50051}}
    pod["securityContext"]["runAsNonRoot"] = False
    pod["automountServiceAccountToken"] = True
    pod["volumes"].append({"name": "token", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}}]}})
    pod["initContainers"][0]["securityContext"]["capabilities"]["drop"] = ["NET_RAW"]
    sidecar = next(c for c in find(objects, "Deployment", "tf-serving")["spec"]["template"][
        "spec"]["containers"] if c["name"] == "sync-models")
    del sidecar["livenessProbe"]  # a hung model sync would go unnoticed
    objects = [o for o in objects if o["kind"] != "PodDisruptionBudget"
               and o["metadata"]["name"] != "default-deny"]
    found = "\n".join(manifests.policy_violations(objects))
    for expected in ("router/router: image 'ghcr.io/recsys-platform/router:latest' is not "
                     "pinned", "router/router: no memory limit",
                     "router/router: root filesystem is not read-only",
                     "router/router: livenessProbe is not a gRPC health check",
                     "Deployment/router: pod does not run as a non-root user",
                     "Deployment/router: mounts a service account token",
                     "Deployment/router: projects a service account token (not an API "
                     "client)",
                     "router/fetch-features: capabilities are not all dropped",
                     "tf-serving/sync-models: no liveness probe",
                     "Deployment/candidate: no PodDisruptionBudget",
                     "no default-deny NetworkPolicy"):
        assert expected in found, expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_workloads_autoscale_and_spread_across_zones(overlay):
    objects = render(overlay)
    scalers = manifests.autoscaled(objects)
    for name in SERVING:
        metrics = {m["type"]: m for m in scalers[name]["spec"]["metrics"]}
        assert metrics["Resource"]["resource"]["name"] == "cpu"
        pod = find(objects, "Deployment", name)["spec"]["template"]["spec"]
        assert "replicas" not in find(objects, "Deployment", name)["spec"], \
            f"{name}: the autoscaler owns the replica count"
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    minimum = {"dev": 1, "prod": 3}[overlay]
    assert {s["spec"]["minReplicas"] for s in scalers.values()} == {minimum}
    if overlay == "prod":  # the Prometheus adapter serves requests per second there
        for name in ("router", "candidate", "ranking"):
            pods = [m for m in scalers[name]["spec"]["metrics"] if m["type"] == "Pods"]
            assert pods[0]["pods"]["metric"]["name"] == "grpc_requests_per_second"


PRODUCT = ({"name": "shop", "labels": {"recsys.io/product": "true"}}, {"app": "shop"})
OTHER = ({"name": "other", "labels": {}}, {"app": "x"})


def pod_labels(objects, name: str) -> tuple[dict, dict]:
    namespace = next(o for o in objects if o["kind"] == "Namespace")["metadata"]
    ns = {"name": namespace["name"],
          "labels": {**namespace.get("labels", {}),
                     "kubernetes.io/metadata.name": namespace["name"]}}
    workload = next(o for o in objects if o["metadata"]["name"] == name
                    and o["kind"] in ("Deployment", "StatefulSet", "CronJob"))
    template = (workload["spec"]["jobTemplate"]["spec"]["template"]
                if workload["kind"] == "CronJob" else workload["spec"]["template"])
    return ns, template["metadata"]["labels"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_router_is_reachable_from_product_namespaces(overlay):
    objects = render(overlay)
    labels = {name: pod_labels(objects, name)[1]
              for name in SERVING + ("retrain", "stream-worker")}
    labels["redis"] = {"app.kubernetes.io/name": "redis"}
    labels["pushgateway"] = pod_labels(objects, "pushgateway")[1]
    ports = {"router": 50051, "candidate": 50052, "ranking": 50053, "tf-serving": 8500,
             "redis": 6379, "pushgateway": 9091, "stream-worker": 9470}

    def can(source, target):
        return manifests.reachable(objects, source, labels[target], ports[target])

    assert can(PRODUCT, "router")
    for target in ("candidate", "ranking", "tf-serving", "redis", "pushgateway",
                   "stream-worker"):
        assert not can(PRODUCT, target), target
    assert not can(OTHER, "router")
    allowed = {"router": {"candidate", "ranking", "redis"},
               "candidate": {"tf-serving", "redis"}, "ranking": {"tf-serving", "redis"},
               "tf-serving": set(), "retrain": {"redis", "router", "pushgateway"},
               "stream-worker": {"redis"}}
    for source, targets in allowed.items():
        for target in ports:  # every pair not listed is refused
            if target != source:
                expected = target in targets and (target != "redis" or overlay == "dev")
                got = can(pod_labels(objects, source), target)
                assert got == expected, f"{overlay}: {source} -> {target}: {got}"


def test_redis_is_in_the_namespace_in_dev_and_managed_in_prod(tmp_path):
    dev, prod = render("dev"), render("prod")
    assert find(dev, "Service", "redis")
    assert not [o for o in prod if o["metadata"]["name"] == "redis"]
    stores = {name: load_config(FeatureStoreConfig, config_map_file(objects, "feature-store",
                                                                     "feature_store.yaml"),
                                tmp_path, f"{name}.yaml")
              for name, objects in (("dev", dev), ("prod", prod))}
    assert stores["dev"].online_store.connection_string == "redis:6379"
    address = stores["prod"].online_store.connection_string.split(",")[0]
    host, port = address.split(":")
    egress = find(prod, "NetworkPolicy", "allow-managed-redis")["spec"]["egress"][0]
    assert egress["to"][0]["ipBlock"]["cidr"] == f"{host}/32"
    assert egress["ports"][0]["port"] == int(port)


def mounts(container: dict) -> list[tuple[str, bool]]:
    return [(m["mountPath"], m.get("readOnly", False)) for m in container["volumeMounts"]]


def mounted(path: str, container: dict, writable: bool = False) -> bool:
    return any(Path(path).is_relative_to(mount) and (not writable or not read_only)
               for mount, read_only in mounts(container))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_configs_pass_their_schemas_and_match_the_manifests(overlay, tmp_path):
    objects = render(overlay)
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    for name, schema in SERVICES.items():
        deployment = find(objects, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["args"] == ["--config", "/etc/recsys/config.yaml"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        fields = {f"RECSYS_{name.upper()}_{f.upper()}" for f in schema.__dataclass_fields__}
        assert set(env) <= fields, f"{name}: env names no config field: {set(env) - fields}"
        (tmp_path / "config.yaml").write_text(
            config_map_file(objects, f"{name}-config", "config.yaml"))
        with mock.patch.dict(os.environ, env):  # the values pass the schema too
            config = config_lib.load(schema, tmp_path / "config.yaml",
                                     env_prefix=f"RECSYS_{name.upper()}")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": config.port, "metrics": config.metrics_port}, name
        assert config.host == "0.0.0.0"
        assert {p["name"]: p["port"] for p in services[name]["spec"]["ports"]} == ports
        assert config.grace_seconds + 3 < pod["terminationGracePeriodSeconds"]
        assert mounted(config.feature_store_config, container)
        assert mounted(config.feature_store_dir, container)
        assert config.feature_source == "feast"
        if name == "router":
            for path in (config.experiments_file, config.experiment_audit_log,
                         config.exposure_log_dir, config.shadow_log_dir,
                         config.outcome_log_dir):
                assert mounted(path, container, writable=True), path
            assert mounted(config.admin_tokens_file, container)
            for target, address in (("candidate", config.candidate_service),
                                    ("ranking", config.ranking_service)):
                host, port = dialled(address, services[target])
                assert host == target and port in {
                    p["port"] for p in services[target]["spec"]["ports"]}
        else:
            host, port = dialled(config.model_server, services["tf-serving"])
            assert host == "tf-serving"
            assert port == {p["name"]: p["port"] for p in
                            services["tf-serving"]["spec"]["ports"]}["grpc"]
    experiments = config_map_file(objects, "router-config", "experiments.yaml")
    load_config(ExperimentConfig, experiments, tmp_path, "experiments.yaml")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tf_serving_config_serves_both_models_with_rollout_labels(overlay, tmp_path):
    objects = render(overlay)
    config_map = find(objects, "ConfigMap", "tf-serving-config")
    path = tmp_path / "models.config"
    path.write_text(config_map["data"]["models.config"])
    sources = {s.name: s for s in model_sources(ModelServerConfig(
        model_config_file=str(path)))}
    assert set(sources) == {"retrieval", "ranking"}
    container = find(objects, "Deployment", "tf-serving")["spec"]["template"]["spec"][
        "containers"][0]
    assert container["image"] == "tensorflow/serving:2.16.1"  # the training TF version
    assert "--model_config_file=/etc/tf-serving/models.config" in container["args"]
    # connections age out as our own servers' do, so clients re-resolve the headless
    # Service and reach replicas added since
    assert (f"grpc.max_connection_age_ms={grpc_server.MAX_CONNECTION_AGE_MS}"
            in " ".join(container["args"]))
    experiments = load_config(ExperimentConfig, config_map_file(
        objects, "router-config", "experiments.yaml"), tmp_path, "experiments.yaml")
    for model, source in sources.items():
        label = getattr(experiments.defaults, f"{model}_version_label")
        # every label the router asks for is one TF Serving defines
        assert not label or label in source.labels, f"{overlay}: {model} label {label!r}"
        if overlay == "prod":  # explicit versions: what `stable` and `canary` name is loaded
            assert label == "stable"
            assert source.policy == "specific" and "stable" in source.labels
            assert set(source.labels.values()) <= set(source.versions)


def test_the_canary_job_rolls_out_the_version_labelled_canary(tmp_path):
    plan = find(render("rollout"), "Job", next(
        o["metadata"]["name"] for o in render("rollout") if o["kind"] == "Job"))
    env = next(o for o in render("rollout") if o["kind"] == "ConfigMap")["data"]
    assert plan["metadata"]["name"] == f"canary-{env['MODEL']}-{env['VERSION']}"
    path = tmp_path / "models.config"
    path.write_text(find(render("prod"), "ConfigMap", "tf-serving-config")["data"][
        "models.config"])
    source = {s.name: s for s in model_sources(ModelServerConfig(
        model_config_file=str(path)))}[env["MODEL"]]
    assert source.labels == {"stable": int(env["STABLE"]), "canary": int(env["VERSION"])}
    args = plan["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--promotion") + 1] == "labels"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_stream_worker_config_matches_its_pod_and_the_feature_store(overlay, tmp_path):
    with mock.patch.dict(os.environ):  # importing Feast sets Prometheus variables
        from pipelines.features.stream import StreamConfig
    objects = render(overlay)
    config = load_config(StreamConfig, config_map_file(objects, "stream-config", "stream.yaml"),
                         tmp_path)
    store = load_config(FeatureStoreConfig, config_map_file(
        objects, "feature-store", "feature_store.yaml"), tmp_path, "store.yaml")
    # the stream and the online store are the same Redis, with the same TLS setting
    address, *options = store.online_store.connection_string.split(",")
    assert config.redis == address and config.redis_ssl == ("ssl=true" in options)
    pod = find(objects, "StatefulSet", "stream-worker")["spec"]["template"]["spec"]
    worker = pod["containers"][0]
    assert worker["ports"] == [{"name": "metrics", "containerPort": config.metrics_port}]
    assert config.metrics_host == "0.0.0.0"  # reachable by Prometheus and the probes
    assert mounted(config.workdir, worker, writable=True)
    assert mounted(config.feature_store_config, worker)
    env = {e["name"] for e in worker["env"]}
    assert env <= {f"RECSYS_STREAM_{f.upper()}" for f in StreamConfig.__dataclass_fields__}
    # the router publishes the reported ratings to this stream
    router_pod = find(objects, "Deployment", "router")["spec"]["template"]["spec"]
    with mock.patch.dict(os.environ, {e["name"]: e["value"]
                                      for e in router_pod["containers"][0]["env"]}):
        (tmp_path / "router.yaml").write_text(
            config_map_file(objects, "router-config", "config.yaml"))
        router = config_lib.load(RouterConfig, tmp_path / "router.yaml",
                                 env_prefix="RECSYS_ROUTER")
    assert (router.outcome_stream_redis, router.outcome_stream_ssl, router.outcome_stream) == \
        (config.redis, config.redis_ssl, config.stream)


def test_training_and_feature_configs_pass_their_schemas(tmp_path):
    objects = render("prod")
    config = load_config(PipelineConfig, config_map_file(objects, "pipeline-config",
                                                         "pipeline.yaml"), tmp_path)
    cron = find(objects, "CronJob", "retrain")
    pod = manifests.pod_spec(cron)
    train = next(c for c in pod["initContainers"] if c["name"] == "train")
    assert train["args"][train["args"].index("--workdir") + 1] == config.workdir
    assert mounted(config.workdir, train, writable=True)


def python_module(container: dict, entrypoint: list[str]) -> str | None:
    """The module a container runs: `python -m X` in its command (or in the script of a
    `sh -c`), else its image's entrypoint with the container's arguments."""
    command = container.get("command", [])
    if command[:2] in (["sh", "-c"], ["/bin/sh", "-c"]):
        command = shlex.split(command[2])
    if not command:
        command = entrypoint + container.get("args", [])
    return command[command.index("-m") + 1] if "-m" in command else None


def entrypoint(dockerfile: Path) -> list[str]:
    lines = [line for line in dockerfile.read_text().splitlines()
             if line.startswith("ENTRYPOINT")]
    return json.loads(lines[-1].removeprefix("ENTRYPOINT"))


@pytest.mark.parametrize("overlay", manifests.KUSTOMIZATIONS)
def test_every_project_image_has_a_build_target_that_runs_the_command(overlay):
    targets = build_manifest.load().values()
    images = {t.image: t for t in targets if t.image}
    env_of = {}
    for target in targets:
        for src in target.srcs:
            env_of[src] = target.env
    for obj in render(overlay):
        pod = manifests.pod_spec(obj)
        for _, container in manifests.containers(pod) if pod else []:
            image = container["image"]
            if not image.startswith("ghcr.io/recsys-platform/"):
                continue
            where = f"{obj['metadata']['name']}/{container['name']}"
            assert image in images, f"{where}: {image} has no BUILD target"
            assert (ROOT / images[image].dockerfile).is_file(), where
            module = python_module(container, entrypoint(ROOT / images[image].dockerfile))
            if module is None:  # a shell step of the image (seeding a volume)
                assert container["command"][0] in ("/bin/sh", "sh"), where
                continue
            path = ROOT / (module.replace(".", "/") + ".py")
            assert path.is_file(), f"{where}: runs {module}, which does not exist"
            owners = {env for src, env in env_of.items() if path.is_relative_to(ROOT / src)}
            assert owners & {images[image].env, "both"}, \
                f"{where}: {module} does not run in the {images[image].env} image"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_drift_job_reads_the_labels_and_defaults_the_serving_pods_use(overlay):
    objects = render(overlay)
    job = find(objects, "CronJob", "drift-check")["spec"]["jobTemplate"]["spec"]["template"]
    check_container = next(c for c in job["spec"]["initContainers"] if c["name"] == "check")
    command = check_container["command"][-1].split()
    models_config = command[command.index("--models-config") + 1]
    experiments = command[command.index("--experiments") + 1]
    assert mounted(models_config, check_container)
    assert mounted(experiments, check_container)
    volumes = {v["name"]: v for v in job["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in check_container["volumeMounts"]}
    by_path = {path: volumes[name] for path, name in mounts.items()}
    def volume(deployment, name):
        pod = find(objects, "Deployment", deployment)["spec"]["template"]["spec"]
        return next(v for v in pod["volumes"] if v["name"] == name)
    assert by_path[str(Path(models_config).parent)]["configMap"] == \
        volume("tf-serving", "config")["configMap"]
    assert by_path[str(Path(experiments).parent)]["persistentVolumeClaim"] == \
        volume("router", "experiments")["persistentVolumeClaim"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_online_quality_job_reads_the_logs_the_routers_write(overlay, tmp_path):
    objects = render(overlay)
    job = find(objects, "CronJob", "online-quality")["spec"]["jobTemplate"]["spec"]["template"]
    check = next(c for c in job["spec"]["initContainers"] if c["name"] == "check")
    command = check["command"][-1].split()
    (tmp_path / "router.yaml").write_text(config_map_file(objects, "router-config",
                                                          "config.yaml"))
    router = config_lib.load(RouterConfig, tmp_path / "router.yaml")
    for flag, field in (("--exposures", "exposure_log_dir"), ("--outcomes", "outcome_log_dir")):
        path = command[command.index(flag) + 1]
        assert path == getattr(router, field), flag
        assert mounted(path, check), flag
    volumes = {v["name"]: v for v in job["spec"]["volumes"]}
    router = find(objects, "Deployment", "router")["spec"]["template"]["spec"]
    claim = next(v for v in router["volumes"] if v["name"] == "exposures")
    assert volumes["exposures"]["persistentVolumeClaim"] == claim["persistentVolumeClaim"]


def on_volume(path: str, pod: dict, container: dict) -> tuple[str, str]:
    """(the claim or volume a container's path lies on, the path inside that volume)."""
    mount = max((m for m in container["volumeMounts"]
                 if Path(path).is_relative_to(m["mountPath"])),
                key=lambda m: len(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = volume.get("persistentVolumeClaim", {}).get("claimName", volume["name"])
    inside = Path(mount.get("subPath", "")) / Path(path).relative_to(mount["mountPath"])
    return claim, str(inside)


def test_the_loop_controller_reads_what_the_checks_write_and_retrains_through_the_api():
    from pipelines.loop import controller, kube_job
    objects = render("dev")
    cron = find(objects, "CronJob", "loop-controller")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"  # and the lease: one loop at once
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = controller.parser().parse_args(container["args"][1:])  # the CLI accepts them
    assert args.command == "tick" and args.router and args.model_server

    # its triggers read the reports where the checks write them
    for job, flag, report in (("drift-check", "--drift-report", "drift"),
                              ("online-quality", "--quality-report", "quality")):
        check_pod = find(objects, "CronJob", job)["spec"]["jobTemplate"]["spec"]["template"][
            "spec"]
        check = next(c for c in check_pod["initContainers"] if c["name"] == "check")
        command = shlex.split(check["command"][-1])
        written = f"{command[command.index('--out') + 1]}/{report}.json"
        assert mounted(written, check, writable=True)
        assert on_volume(written, check_pod, check) == \
            on_volume(getattr(args, flag[2:].replace("-", "_")), pod, container), job

    # it sees the versions the retraining pushes, on the pipeline's volume
    retrain = find(objects, "CronJob", "retrain")
    assert retrain["spec"]["suspend"] is True  # the loop's schedule trigger runs it
    train = next(c for c in retrain["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "initContainers"] if c["name"] == "train")
    workdir = train["args"][train["args"].index("--workdir") + 1]
    assert on_volume(f"{workdir}/model_repo", retrain["spec"]["jobTemplate"]["spec"][
        "template"]["spec"], train) == on_volume(f"{args.workdir}/model_repo", pod, container)
    assert find(objects, "PersistentVolumeClaim", "pipeline-workdir")["spec"][
        "accessModes"] == ["ReadWriteMany"]

    # its retraining starts a Job from that CronJob, which its Role allows and no more
    command = shlex.split(args.retrain_command)
    started = kube_job.parser().parse_args(command[command.index("-m") + 2:])
    assert started.cronjob == "retrain"
    rules = find(objects, "Role", "loop-controller")["rules"]
    assert {(r["resources"][0], v) for r in rules for v in r["verbs"]} == {
        ("cronjobs", "get"), ("jobs", "create"), ("jobs", "get"), ("jobs", "delete")}
    binding = find(objects, "RoleBinding", "loop-controller")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod[
        "serviceAccountName"], "namespace": "recsys-dev"}]
    token = next(v for v in pod["volumes"] if "projected" in v)
    assert on_volume(str(kube_job.ACCOUNT / "token"), pod, container)[0] == token["name"]

    # it reaches the router's admin API and TF Serving; TF Serving keeps the version users
    # get loaded next to the canary's
    ns, labels = pod_labels(objects, "loop-controller")
    for target, port in (("router", 50051), ("tf-serving", 8500)):
        assert manifests.reachable(objects, (ns, labels), pod_labels(objects, target)[1], port)
    assert not manifests.reachable(objects, (ns, labels), pod_labels(objects, "ranking")[1],
                                   50053)
    models = config_map_file(objects, "tf-serving-config", "models.config")
    assert models.count("latest { num_versions: 2 }") == 2


def test_prod_rolls_out_through_the_labels_in_git_without_the_loop():
    assert not [o for o in render("prod") if "loop" in o["metadata"]["name"]]
