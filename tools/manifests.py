"""Checks the Kubernetes manifests without a cluster: render, schema, policy.

  python -m tools.manifests [--kubernetes-version 1.32.0] [NAME ...]

Renders each kustomization (the overlays dev and prod, and the canary rollout) with
`kubectl kustomize`, validates every object against the
Kubernetes OpenAPI schema of the stated version (kubernetes-validate, strict: unknown
fields are errors) and applies the project's policy (`policy_violations`). Prints one line
per problem and exits 1 when there is any; CI and the CD pipeline run it on every change.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ("dev", "prod")
KUSTOMIZATIONS = {"dev": "k8s/overlays/dev", "prod": "k8s/overlays/prod",
                  "rollout": "k8s/rollout"}
KUBERNETES_VERSION = "1.32.0"
# Custom resources of the Prometheus operator: not in the Kubernetes schema; their shape
# is checked by tests/unit/test_monitoring.py (and their rules by promtool)
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "CronJob", "Job")
# Long-running containers that do not speak gRPC, and why their probes are not gRPC
# health checks
NON_GRPC_PROBES = {
    "tf-serving": "TF Serving has no grpc.health.v1; its REST model status is the check",
    "sync-models": "a sidecar: restarted when its last successful sync is too old",
    "upload-events": "a sidecar: restarted when its last successful upload is too old",
    "stream-worker": "a stream consumer, no server: its metrics endpoint",
    "redis": "Redis speaks RESP: redis-cli ping",
    "pushgateway": "an HTTP server: its /-/ready and /-/healthy endpoints",
}

# Workloads that call the Kubernetes API, with a projected (short-lived) token, and why
API_CLIENTS = {
    "loop-controller": "starts, follows and stops the retraining Job (pipelines/loop/kube_job.py)",
}


class RenderError(Exception):
    pass


def render(path: str | Path) -> list[dict]:
    """The objects `kubectl kustomize` renders from a kustomization directory."""
    if not shutil.which("kubectl"):
        raise RenderError("kubectl (with kustomize) is needed to render the manifests")
    done = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True)
    if done.returncode:
        raise RenderError(f"{path}: kubectl kustomize failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def overlay(name: str) -> list[dict]:
    return render(ROOT / KUSTOMIZATIONS[name])


def name_of(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def schema_errors(objects: list[dict], version: str = KUBERNETES_VERSION) -> list[str]:
    import kubernetes_validate

    errors = []
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(p) for p in err.path)
            errors.append(f"{name_of(obj)}: {where}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            errors.append(f"{name_of(obj)}: no schema in Kubernetes {version}: {err}")
    return errors


def pod_spec(obj: dict) -> dict | None:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec.get("template", {}).get("spec") if obj["kind"] in WORKLOAD_KINDS else None


def containers(pod: dict) -> list[tuple[str, dict]]:
    """(kind, container) for init containers and containers."""
    return ([("init", c) for c in pod.get("initContainers", [])]
            + [("main", c) for c in pod["containers"]])


def image_is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest") and any(
        ch.isdigit() for ch in tag)


def _container_violations(where: str, kind: str, c: dict, long_running: bool) -> list[str]:
    found = []
    if not image_is_pinned(c.get("image", "")):
        found.append(f"{where}: image {c.get('image')!r} is not pinned to a version")
    resources = c.get("resources", {})
    for part in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(part, {}):
                found.append(f"{where}: no {resource} {part[:-1]}")
    security = c.get("securityContext", {})
    if security.get("readOnlyRootFilesystem") is not True:
        found.append(f"{where}: root filesystem is not read-only")
    if security.get("allowPrivilegeEscalation") is not False:
        found.append(f"{where}: privilege escalation is not disabled")
    if security.get("capabilities", {}).get("drop") != ["ALL"]:
        found.append(f"{where}: capabilities are not all dropped")
    if security.get("privileged"):
        found.append(f"{where}: privileged")
    if kind == "main" and long_running:
        if "livenessProbe" not in c:
            found.append(f"{where}: no liveness probe")
        grpc_ports = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == "grpc"]
        if c["name"] not in NON_GRPC_PROBES:
            if "readinessProbe" not in c:
                found.append(f"{where}: no readiness probe")
            for probe in ("readinessProbe", "livenessProbe"):
                port = c.get(probe, {}).get("grpc", {}).get("port")
                if port is None or port not in grpc_ports:
                    found.append(f"{where}: {probe} is not a gRPC health check on its grpc port")
    return found


def policy_violations(objects: list[dict]) -> list[str]:
    """What the project requires of every workload; one message per breach."""
    found = []
    by_kind: dict[str, list[dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    for obj in objects:
        pod = pod_spec(obj)
        if pod is None:
            continue
        where = name_of(obj)
        security = pod.get("securityContext", {})
        if security.get("runAsNonRoot") is not True or not security.get("runAsUser"):
            found.append(f"{where}: pod does not run as a non-root user")
        if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            found.append(f"{where}: no RuntimeDefault seccomp profile")
        if pod.get("automountServiceAccountToken") is not False:
            found.append(f"{where}: mounts a service account token")
        if obj["metadata"]["name"] not in API_CLIENTS and any(
                "serviceAccountToken" in source for v in pod.get("volumes", [])
                for source in v.get("projected", {}).get("sources", [])):
            found.append(f"{where}: projects a service account token (not an API client)")
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            found.append(f"{where}: shares a host namespace")
        long_running = obj["kind"] in ("Deployment", "StatefulSet")
        for kind, c in containers(pod):
            found += _container_violations(f"{where}/{c['name']}", kind, c, long_running)
    for obj in by_kind.get("Deployment", []) + by_kind.get("StatefulSet", []):
        labels = obj["spec"]["template"]["metadata"]["labels"]
        if not any(_selects(p["spec"]["selector"], labels)
                   for p in by_kind.get("PodDisruptionBudget", [])):
            found.append(f"{name_of(obj)}: no PodDisruptionBudget")
    if by_kind.get("Namespace") and not any(p["spec"].get("podSelector") == {} and
               set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress")
               for p in by_kind.get("NetworkPolicy", [])):
        found.append("no default-deny NetworkPolicy")
    return found


def autoscaled(objects: list[dict]) -> dict[str, dict]:
    """Deployment name -> its HorizontalPodAutoscaler."""
    return {h["spec"]["scaleTargetRef"]["name"]: h
            for h in objects if h["kind"] == "HorizontalPodAutoscaler"}


def _selects(selector: dict, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        operator = expr["operator"]
        if ((operator == "In" and value not in expr["values"])
                or (operator == "NotIn" and value in expr.get("values", []))
                or (operator == "Exists" and not present)
                or (operator == "DoesNotExist" and present)):
            return False
    return True


def _peer_matches(peer: dict, namespace: str, other_namespace: dict, other_labels: dict) -> bool:
    if "ipBlock" in peer:
        return False  # pod-to-pod traffic inside the cluster; ipBlocks are for outside
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], other_namespace["labels"]):
            return False
    elif other_namespace["name"] != namespace:
        return False
    return _selects(peer.get("podSelector", {}), other_labels)


def _rules_allow(policies, direction: str, namespace: str, pod_labels: dict,
                 peer_namespace: dict, peer_labels: dict, port: int) -> bool:
    """Whether the policies isolating a pod in `direction` let this peer and port through
    (True when no policy isolates it)."""
    key = "ingress" if direction == "Ingress" else "egress"
    peers_key = "from" if direction == "Ingress" else "to"
    isolating = [p for p in policies if direction in p["spec"].get("policyTypes", [])
                 and _selects(p["spec"]["podSelector"], pod_labels)]
    if not isolating:
        return True
    for policy in isolating:
        for rule in policy["spec"].get(key, []):
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port for p in ports):
                continue
            peers = rule.get(peers_key)
            if not peers or any(_peer_matches(peer, namespace, peer_namespace, peer_labels)
                                for peer in peers):
                return True
    return False


def reachable(objects: list[dict], source: tuple[dict, dict], target_labels: dict,
              port: int) -> bool:
    """Whether a pod may open a TCP connection to a pod of the rendered namespace.

    source: (namespace {name, labels}, pod labels); the target lives in the namespace of
    the rendered objects. Evaluates NetworkPolicy semantics: a connection needs the
    source's egress and the target's ingress to allow it.
    """
    namespace = next(o["metadata"]["name"] for o in objects if o["kind"] == "Namespace")
    ns_labels = next(o["metadata"].get("labels", {}) for o in objects
                     if o["kind"] == "Namespace")
    target_namespace = {"name": namespace,
                        "labels": {**ns_labels, "kubernetes.io/metadata.name": namespace}}
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    source_namespace, source_labels = source
    egress_ok = (source_namespace["name"] != namespace or _rules_allow(
        policies, "Egress", namespace, source_labels, target_namespace, target_labels, port))
    ingress_ok = _rules_allow(policies, "Ingress", namespace, target_labels,
                              source_namespace, source_labels, port)
    return egress_ok and ingress_ok


def check(overlays=tuple(KUSTOMIZATIONS), version: str = KUBERNETES_VERSION) -> list[str]:
    problems = []
    for name in overlays:
        try:
            objects = overlay(name)
        except RenderError as err:
            problems.append(str(err))
            continue
        problems += [f"{name}: {p}" for p in schema_errors(objects, version)]
        problems += [f"{name}: {p}" for p in policy_violations(objects)]
        print(f"manifests: {name}: {len(objects)} objects rendered and checked", flush=True)
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overlays", nargs="*", default=list(KUSTOMIZATIONS),
                        metavar="NAME", help=f"of {', '.join(KUSTOMIZATIONS)}")
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    args = parser.parse_args(argv)
    unknown = [o for o in args.overlays if o not in KUSTOMIZATIONS]
    if unknown:
        print(f"error: no kustomization named {unknown[0]!r}; known: "
              f"{', '.join(KUSTOMIZATIONS)}", file=sys.stderr)
        return 2
    problems = check(args.overlays, args.kubernetes_version)
    for problem in problems:
        print(f"manifests: {problem}")
    print(f"manifests: {len(problems)} problem(s) (Kubernetes {args.kubernetes_version})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
