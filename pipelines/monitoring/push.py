"""Pushes a drift run's results to a Prometheus Pushgateway, job `recsys_drift`.

The series (alert rules use these names; keep them):
  recsys_drift_score{check,feature,method}      the score
  recsys_drift_threshold{check,feature,method}  its threshold
  recsys_drift_detected{check,feature}          1 if any method is over its threshold
  recsys_drift_last_run_timestamp_seconds       when the run finished
A push replaces everything the job pushed before (PUT), so a feature no longer checked
leaves no stale series. Runs that end in bad input push nothing: the timestamp stops
moving, which is what an "has not run" alert watches.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from pipelines.monitoring.drift import Result

JOB = "recsys_drift"


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
