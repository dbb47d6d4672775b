"""Pushes the monitoring jobs' results to a Prometheus Pushgateway: the drift check's
(job `recsys_drift`) and the online quality check's (job `recsys_online_quality`).

Drift series (alert rules use these names; keep them):
  recsys_drift_score{check,feature,method}      the score
  recsys_drift_threshold{check,feature,method}  its threshold
  recsys_drift_detected{check,feature}          1 if any method is over its threshold
  recsys_drift_last_run_timestamp_seconds       when the run finished
A push replaces everything the job pushed before (PUT), so a feature no longer checked
leaves no stale series. Runs that end in bad input push nothing: the timestamp stops
moving, which is what an "has not run" alert watches.

Online quality series (pipelines/monitoring/quality.py says what each metric is):
  recsys_online_quality{scope,model,version,experiment,arm,source,metric}  the figure;
      scope version / arm / source (engagement) or delayed (labels that came later);
      labels that do not apply to a scope are empty
  recsys_online_quality_samples{...same}        the samples behind it
  recsys_online_quality_promise{model,version,metric}  the version's offline promise
  recsys_online_quality_below_promise{model,version,metric}  1 when its 95% interval
      lies below the promise by more than the tolerance
  recsys_online_quality_last_run_timestamp_seconds
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from pipelines.monitoring.drift import Result

JOB = "recsys_drift"
QUALITY_JOB = "recsys_online_quality"
FIGURE_LABELS = ("scope", "model", "version", "experiment", "arm", "source", "metric")


def registry_of(results: list[Result], finished_at: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    score = Gauge("recsys_drift_score", "Drift score of a feature by method",
                  ["check", "feature", "method"], registry=registry)
    threshold = Gauge("recsys_drift_threshold", "Score above which a feature has drifted",
                      ["check", "feature", "method"], registry=registry)
    detected = Gauge("recsys_drift_detected", "1 if any method's score is over its "
                     "threshold", ["check", "feature"], registry=registry)
    last_run = Gauge("recsys_drift_last_run_timestamp_seconds",
                     "When the last drift check finished", registry=registry)
    for r in results:
        for method, limit in r.thresholds.items():
            score.labels(r.check, r.feature, method).set(r.comparison.scores[method])
            threshold.labels(r.check, r.feature, method).set(limit)
        detected.labels(r.check, r.feature).set(1 if r.detected else 0)
    last_run.set(finished_at)
    return registry


def push(address: str, results: list[Result], finished_at: float,
         timeout: float = 10.0) -> None:
    """Raises OSError (URLError included) when the gateway cannot be reached."""
    push_to_gateway(address, job=JOB, registry=registry_of(results, finished_at),
                    timeout=timeout)


def quality_registry(figures: list[dict], verdicts: list[dict],
                     finished_at: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    value = Gauge("recsys_online_quality", "An online quality figure", FIGURE_LABELS,
                  registry=registry)
    samples = Gauge("recsys_online_quality_samples", "Samples behind an online figure",
                    FIGURE_LABELS, registry=registry)
    promise = Gauge("recsys_online_quality_promise", "A version's offline promise",
                    ["model", "version", "metric"], registry=registry)
    below = Gauge("recsys_online_quality_below_promise", "1 if the version's online "
                  "figure is below its promise", ["model", "version", "metric"],
                  registry=registry)
    last_run = Gauge("recsys_online_quality_last_run_timestamp_seconds",
                     "When the last online quality check finished", registry=registry)
    for f in figures:
        labels = [str(f.get(name, "")) for name in FIGURE_LABELS]
        value.labels(*labels).set(f["value"])
        samples.labels(*labels).set(f["samples"])
    for v in verdicts:
        if v["promise"] is not None:
            key = (v["model"], str(v["version"]), v["metric"])
            promise.labels(*key).set(v["promise"])
            below.labels(*key).set(1 if v["status"] == "below" else 0)
    last_run.set(finished_at)
    return registry


def push_quality(address: str, figures: list[dict], verdicts: list[dict],
                 finished_at: float, timeout: float = 10.0) -> None:
    """Raises OSError (URLError included) when the gateway cannot be reached."""
    push_to_gateway(address, job=QUALITY_JOB,
                    registry=quality_registry(figures, verdicts, finished_at),
                    timeout=timeout)
