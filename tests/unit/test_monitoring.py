"""The monitoring manifests (k8s/base/monitoring) render, their rules pass promtool and
its unit tests, and every metric and label the rules and the dashboard use exists."""
from __future__ import annotations

import ast
import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.unit import promql

MONITORING = ROOT / "k8s" / "base" / "monitoring"
RULES_FILE = MONITORING / "prometheus-rules.yaml"
DASHBOARD_FILE = MONITORING / "dashboards" / "recsys.json"
ADAPTER_FILE = MONITORING / "prometheus-adapter-rules.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
CODE_DIRS = ("libs", "services", "pipelines")

# Labels Prometheus adds to every series it scrapes through a ServiceMonitor (the
# Operator's relabelling), next to the metric's own.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "service", "pod", "container",
                           "endpoint"})
# TF Serving 2.16's Prometheus names (tensorflow_serving/servables/tensorflow/util.cc,
# TensorFlow's cc/saved_model/loader.cc; '/' becomes ':'), with their labels.
TF_SERVING = {
    ":tensorflow:serving:request_count": ("counter", {"model_name", "status"}),
    ":tensorflow:serving:request_latency": ("histogram", {"model_name", "API", "entrypoint"}),
    ":tensorflow:serving:runtime_latency": ("histogram", {"model_name", "API", "runtime"}),
    ":tensorflow:serving:model_warmup_latency": ("histogram", {"model_path", "status"}),
    ":tensorflow:cc:saved_model:load_attempt_count": ("counter", {"model_path", "status"}),
}
# The drift job's results (pipelines/monitoring/, pushed to the Pushgateway as job
# recsys_drift). Until that code lands these are the contract; once it defines them,
# test_drift_metrics_keep_their_contract holds it to these labels.
DRIFT = {
    "recsys_drift_score": ("gauge", {"check", "feature", "method"}),
    "recsys_drift_threshold": ("gauge", {"check", "feature", "method"}),
    "recsys_drift_detected": ("gauge", {"check", "feature"}),
    "recsys_drift_last_run_timestamp_seconds": ("gauge", set()),
}
_PROMETHEUS_CLIENT_TYPES = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram",
                            "Summary": "summary"}
# Panels the dashboard must have: the monitoring-dashboard specification.
REQUIRED_PANELS = {
    "Request rate by service", "Error ratio by service",
    "Latency p50 / p95 / p99 by service", "Errors by service and code",
    "Request rate by pod (HPA metric)",
    "Model versions loaded (recsys model server)", "TF Serving model versions loaded",
    "TF Serving requests by model and status", "TF Serving request latency p99 by model",
    "Model server calls by model and code",
    "Experiment arm traffic", "Shadow overlap@K", "Shadow requests by outcome",
    "Fallbacks by reason", "Feature-missing rate", "Feature store errors",
    "Feature read latency p99", "Stream freshness", "Stream events by outcome",
    "Drift scores by feature", "Drift detected", "Drift job last run",
    "Online quality against the promise", "Versions below their promise",
    "Online quality job last run", "Click-through by model version",
}
# What Grafana substitutes, for checking the dashboard's PromQL.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h",
                     "namespace": "recsys"}
# Alerts whose promtool unit tests the brief asks for by name (every alert needs one).
REQUIRED_ALERT_TESTS = {"RecsysRouterLatencyHigh", "RecsysRouterErrorRatioHigh",
                        "RecsysFallbackRateHigh", "RecsysFallbackReasonHigh",
                        "RecsysDriftDetected", "RecsysDriftJobStale",
                        "RecsysOnlineQualityBelowPromise"}


# -- helpers ------------------------------------------------------------------------------
def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool is needed (Debian package prometheus; .ci/run installs it)")
    return path


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def kustomize(path: Path) -> list[dict]:
    if not shutil.which("kubectl"):
        pytest.fail("kubectl (with kustomize) is needed to render the manifests")
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def rule_groups() -> list[dict]:
    doc = yaml.safe_load(RULES_FILE.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    return doc["spec"]["groups"]


def rules() -> list[dict]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def write_rules(directory: Path, groups: list[dict]) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text())


def all_panels(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out.append(panel)
        out += all_panels(panel.get("panels", []))
    return out


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables substituted) for every target."""
    out = []
    for panel in all_panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            out.append((panel["title"], substitute(target["expr"])))
    return out


def substitute(expr: str) -> str:
    def value(match):
        name = match.group(1) or match.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown dashboard variable ${name} in {expr!r}"
        return GRAFANA_VARIABLES[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


@functools.lru_cache(maxsize=1)
def code_metrics() -> dict[str, tuple[str, frozenset]]:
    """Metric name -> (type, labels) from every prometheus_client Counter, Gauge,
    Histogram and Summary defined with a literal name under libs/, services/, pipelines/."""
    found = {}
    for directory in CODE_DIRS:
        for path in (ROOT / directory).rglob("*.py"):
            if "protos" in path.parts:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            imported = {alias.asname or alias.name: alias.name
                        for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                        and node.module == "prometheus_client" for alias in node.names}
            # label lists may be module-level constants
            constants = {node.targets[0].id: node.value for node in tree.body
                         if isinstance(node, ast.Assign) and len(node.targets) == 1
                         and isinstance(node.targets[0], ast.Name)}
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                func = node.func
                if isinstance(func, ast.Name) and imported.get(func.id) in _PROMETHEUS_CLIENT_TYPES:
                    kind = _PROMETHEUS_CLIENT_TYPES[imported[func.id]]
                elif (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                      and func.value.id == "prometheus_client"
                      and func.attr in _PROMETHEUS_CLIENT_TYPES):
                    kind = _PROMETHEUS_CLIENT_TYPES[func.attr]
                else:
                    continue
                name = node.args[0]
                assert isinstance(name, ast.Constant), f"{path}: a metric without a literal name"
                labels = node.args[2] if len(node.args) > 2 else next(
                    (k.value for k in node.keywords if k.arg == "labelnames"), None)
                if isinstance(labels, ast.Name):
                    labels = constants[labels.id]
                names = ast.literal_eval(labels) if labels is not None else ()
                assert not any(k.arg in ("namespace", "subsystem") for k in node.keywords), \
                    f"{path}: {name.value}: namespace/subsystem prefixes are not handled here"
                found[name.value] = (kind, frozenset(names))
    return found


def series(name: str, kind: str, labels, extra=TARGET_LABELS) -> dict[str, frozenset]:
    """The series names Prometheus stores for one metric, with their labels."""
    labels = frozenset(labels) | extra
    if kind == "counter":
        return {name if name.endswith("_total") or name.startswith(":") else f"{name}_total":
                labels}
    if kind == "histogram":
        return {f"{name}_bucket": labels | {"le"}, f"{name}_count": labels,
                f"{name}_sum": labels}
    if kind == "summary":
        return {name: labels | {"quantile"}, f"{name}_count": labels, f"{name}_sum": labels}
    return {name: labels}


def scraped_metrics() -> dict[str, frozenset]:
    """Every series name a rule or panel may select, with its labels (no recording rules)."""
    metrics = {"up": TARGET_LABELS}
    for name, (kind, labels) in code_metrics().items():
        metrics.update(series(name, kind, labels))
    for name, (kind, labels) in TF_SERVING.items():
        metrics.update(series(name, kind, labels))
    defined = code_metrics()
    for name, (kind, labels) in DRIFT.items():
        if name not in defined:
            metrics.update(series(name, kind, labels))
    return metrics


def known_metrics() -> dict[str, frozenset]:
    """scraped_metrics() plus the recording rules' series, with the labels their
    expressions produce (checked on the way)."""
    metrics = scraped_metrics()
    for rule in rules():
        if "record" in rule:
            analysis = promql.analyse(rule["expr"], metrics)
            metrics[rule["record"]] = analysis.labels | frozenset(rule.get("labels", {}))
    return metrics


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# -- kustomize ----------------------------------------------------------------------------
def test_monitoring_kustomization_renders():
    objects = kustomize(MONITORING)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == [("ConfigMap", "recsys-dashboard"), ("Deployment", "pushgateway"),
                     ("NetworkPolicy", "pushgateway"), ("PodDisruptionBudget", "pushgateway"),
                     ("PrometheusRule", "recsys"),
                     ("Service", "pushgateway"),
                     ("ServiceMonitor", "candidate-metrics"),
                     ("ServiceMonitor", "pushgateway-metrics"),
                     ("ServiceMonitor", "ranking-metrics"), ("ServiceMonitor", "router-metrics"),
                     ("ServiceMonitor", "stream-worker-metrics"),
                     ("ServiceMonitor", "tf-serving-metrics")]
    dashboard_map = next(o for o in objects if o["kind"] == "ConfigMap")
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard_map["data"]["recsys.json"]) == dashboard()
    # the adapter's rule is for the adapter's own install, never applied with the app
    listed = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())["resources"]
    assert ADAPTER_FILE.name not in listed


def test_service_monitors_select_the_base_services_and_their_ports(tmp_path):
    """The base (which lists this folder) under a namespace, as the overlays set it:
    every monitor finds its Service and port."""
    resources = [os.path.relpath(ROOT / "k8s" / "base", tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": "recsys", "resources": resources}))
    objects = kustomize(tmp_path)
    services = [o for o in objects if o["kind"] == "Service"]
    deployments = {o["metadata"]["name"]: o for o in objects
                   if o["kind"] in ("Deployment", "StatefulSet")}
    monitors = {o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]: o
                for o in objects if o["kind"] == "ServiceMonitor"}
    assert set(monitors) == {"router", "candidate", "ranking", "tf-serving", "pushgateway",
                             "stream-worker"}
    tf_path = re.search(r'path: "([^"]+)"',
                        (ROOT / "k8s/base/config/monitoring.config").read_text()).group(1)
    for name, monitor in monitors.items():
        spec = monitor["spec"]
        assert monitor["metadata"]["namespace"] == "recsys"
        assert "namespaceSelector" not in spec, name  # the app's own namespace
        [endpoint] = spec["endpoints"]
        if name == "pushgateway":  # the pushed job label (recsys_drift) must survive
            assert endpoint["honorLabels"] is True and endpoint["port"] == "http"
        selected = [s for s in services if spec["selector"]["matchLabels"].items()
                    <= s["metadata"].get("labels", {}).items()]
        assert [s["metadata"]["name"] for s in selected] == [name], name
        ports = {p["name"]: p for p in selected[0]["spec"]["ports"]}
        assert endpoint["port"] in ports, name
        if name == "pushgateway":
            assert endpoint["path"] == "/metrics"
        elif name == "tf-serving":
            assert endpoint["path"] == tf_path
        else:
            assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
            # the metrics' own `service` label must not become exported_service
            assert endpoint["honorLabels"] is True, name
            container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
            container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["metrics"]["targetPort"] == "metrics"
            assert container_ports["metrics"] == ports["metrics"]["port"], name


# -- rules --------------------------------------------------------------------------------
def test_promtool_checks_the_rules(tmp_path):
    result = run_promtool("check", "rules", str(write_rules(tmp_path, rule_groups())))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass_and_fire_every_alert(tmp_path):
    write_rules(tmp_path, rule_groups())
    files = sorted((MONITORING / "tests").glob("*.test.yaml"))
    assert files
    fired = set()
    for path in files:
        shutil.copy(path, tmp_path / path.name)
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    result = run_promtool("test", "rules", *[p.name for p in files], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert REQUIRED_ALERT_TESTS <= fired
    assert {a["alert"] for a in alerts()} <= fired, "an alert without a test that fires it"


def test_rules_use_only_metrics_and_labels_that_exist():
    metrics = scraped_metrics()
    problems = []
    for rule in rules():
        name = rule.get("record") or rule["alert"]
        analysis = promql.analyse(rule["expr"], metrics)
        problems += [f"{name}: {p}" for p in analysis.problems]
        if "record" in rule:
            assert name not in metrics, f"{name} is recorded twice or shadows a metric"
            metrics[name] = analysis.labels | frozenset(rule.get("labels", {}))
        else:  # every $labels.x an annotation prints is on the alert
            labels = analysis.labels | set(rule.get("labels", {}))
            for text in rule["annotations"].values():
                for label in re.findall(r"\$labels\.(\w+)", text):
                    if label not in labels:
                        problems.append(f"{name}: annotation uses $labels.{label}, "
                                        f"not on {sorted(labels)}")
    assert not problems, "\n".join(problems)


def test_alerts_have_severity_duration_annotations_and_a_runbook():
    headings = {github_anchor(h) for h in
                re.findall(r"^#+ (.+)$", RUNBOOKS.read_text(), re.MULTILINE)}
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), "alert names must be unique"
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        assert re.fullmatch(r"\d+[smhd]", alert["for"]), name
        annotations = alert["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        url = annotations["runbook_url"]
        assert url.endswith(f"docs/runbooks.md#{name.lower()}"), (name, url)
        assert name.lower() in headings, f"docs/runbooks.md has no section for {name}"
    for target in re.findall(r"\]\(#([\w-]+)\)", RUNBOOKS.read_text()):
        assert target in headings, f"docs/runbooks.md links to a missing #{target}"


def test_hpa_metric_is_per_pod_for_the_adapter():
    [rule] = [r for r in rules() if r.get("record") == "recsys_grpc_requests_per_second"]
    labels = promql.analyse(rule["expr"], scraped_metrics()).labels
    assert labels == {"namespace", "pod", "service"}
    assert "[1m]" in rule["expr"]


def test_adapter_rule_serves_the_recording_rule_as_a_pods_metric(tmp_path):
    doc = yaml.safe_load(ADAPTER_FILE.read_text())
    assert doc["kind"] == "ConfigMap"
    [rule] = yaml.safe_load(doc["data"]["config.yaml"])["rules"]
    series_name = re.match(r"([a-zA-Z_:][\w:]*)\{", rule["seriesQuery"]).group(1)
    assert series_name in {r.get("record") for r in rules()}
    overrides = rule["resources"]["overrides"]
    assert overrides == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    exposed = re.sub(rule["name"]["matches"], rule["name"]["as"].replace("$1", r"\1"),
                     series_name)
    assert exposed == "grpc_requests_per_second"
    query = (rule["metricsQuery"].replace("<<.Series>>", series_name)
             .replace("<<.LabelMatchers>>", 'namespace="recsys",pod=~"router-.*"')
             .replace("<<.GroupBy>>", "pod"))
    analysis = promql.analyse(query, known_metrics())
    assert not analysis.problems and analysis.labels == {"pod"}
    assert_promtool_parses(tmp_path, [query])


# -- dashboard ----------------------------------------------------------------------------
def assert_promtool_parses(directory: Path, expressions: list[str]) -> None:
    groups = [{"name": "parse", "rules": [{"record": f"parse:expr_{i}", "expr": expr}
                                          for i, expr in enumerate(expressions)]}]
    result = run_promtool("check", "rules", str(write_rules(directory, groups)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_has_the_specified_panels_with_unique_ids():
    panels = all_panels(dashboard()["panels"])
    titles = [p["title"] for p in panels]
    assert REQUIRED_PANELS <= set(titles), REQUIRED_PANELS - set(titles)
    assert len(titles) == len(set(titles))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'namespace="$namespace"' in target["expr"], \
                f"{panel['title']}: not filtered on the namespace variable"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_dashboard_is_templated_on_datasource_and_namespace():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    namespace = variables["namespace"]
    assert namespace["datasource"]["uid"] == "${datasource}"
    metric, label = re.fullmatch(r"label_values\((\S+), (\w+)\)",
                                 namespace["query"]["query"]).groups()
    assert label == "namespace" and label in known_metrics()[metric]


def test_dashboard_queries_parse(tmp_path):
    assert_promtool_parses(tmp_path, [expr for _, expr in dashboard_expressions()])


def test_dashboard_uses_only_metrics_and_labels_that_exist():
    metrics = known_metrics()
    problems = []
    for title, expr in dashboard_expressions():
        problems += [f"{title}: {p}" for p in promql.analyse(expr, metrics).problems]
    assert not problems, "\n".join(problems)


# -- the metric catalogue itself ----------------------------------------------------------
def test_metric_catalogue_reads_the_code():
    defined = code_metrics()
    assert defined["recsys_rpc_server_seconds"] == ("histogram",
                                                    {"service", "method", "code"})
    assert defined["recsys_fallbacks_total"] == ("counter", {"service", "reason"})
    assert defined["recsys_feature_store_errors_total"] == ("counter", frozenset())
    assert defined["recsys_stream_freshness_seconds"][0] == "histogram"
    metrics = scraped_metrics()
    assert "le" in metrics["recsys_rpc_server_seconds_bucket"]
    assert metrics["recsys_feature_missing_total"] == TARGET_LABELS | {"entity"}


def test_drift_metrics_keep_their_contract():
    defined = code_metrics()
    for name, (kind, labels) in DRIFT.items():
        if name in defined:  # the drift job has landed: it must match what rules use
            assert defined[name] == (kind, frozenset(labels)), name


@pytest.mark.parametrize("expr, problem", [
    ("rate(recsys_no_such_metric[5m])", "unknown metric"),
    ('sum by (namespace, reason) (rate(recsys_rpc_server_seconds_count[5m]))',
     "label 'reason'"),
    ('recsys_fallbacks_total{method="Recommend"}', "label 'method'"),
    ("histogram_quantile(0.99, sum by (service) (rate(recsys_rpc_server_seconds_bucket[5m])))",
     "label 'le'"),
    ("recsys_fallbacks_total / on (method) recsys_rpc_server_seconds_count", "label 'method'"),
    ("sum by (namespace) (recsys_fallbacks_total) / on (namespace) group_left (reason) "
     "sum by (namespace) (recsys_rpc_server_seconds_count)", "label 'reason'"),
    ('label_replace(up, "model", "$1", "version", "(.*)")', "label 'version'"),
    ("sum by (pod) (sum by (service) (rate(recsys_fallbacks_total[5m])))", "label 'pod'"),
])
def test_label_checker_catches_mistakes(expr, problem):
    found = promql.analyse(expr, scraped_metrics()).problems
    assert any(problem in p for p in found), found


def test_label_checker_accepts_what_prometheus_accepts():
    expr = ('sum by (namespace, reason) (rate(recsys_fallbacks_total{service="router"}[5m]))'
            ' / on (namespace) group_left sum by (namespace) '
            '(rate(recsys_rpc_server_seconds_count{service="router"}[5m])) > 0.05 '
            'and on (namespace) time() - max by (namespace) (up) > bool 2 * 86400')
    analysis = promql.analyse(expr, scraped_metrics())
    assert not analysis.problems
    assert analysis.labels == {"namespace", "reason"}
