"""Prometheus metrics shared by every service, served on each service's /metrics port."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

RPC_LATENCY = Histogram("recsys_rpc_server_seconds", "Server-side handling time of an RPC",
                        ["service", "method", "code"], buckets=LATENCY_BUCKETS)
CLIENT_LATENCY = Histogram("recsys_rpc_client_seconds", "Time of an outgoing RPC",
                           ["service", "target", "code"], buckets=LATENCY_BUCKETS)
FALLBACKS = Counter("recsys_fallbacks_total", "Answers that came from a fallback path",
                    ["service", "reason"])
ARM_REQUESTS = Counter("recsys_experiment_requests_total", "Requests per experiment arm",
                       ["experiment", "arm"])
SHADOW_REQUESTS = Counter("recsys_shadow_requests_total",
                          "Shadow requests by outcome: compared, failed, dropped (too many "
                          "in flight)", ["outcome"])
SHADOW_OVERLAP = Histogram("recsys_shadow_overlap_at_k",
                           "Share of the served items the shadow also returned",
                           buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0))
OUTCOME_EVENTS = Counter("recsys_outcome_events_total", "Outcome events reported to the "
                         "router, by type and result: accepted, duplicate, late",
                         ["type", "result"])
OUTCOME_PUBLISHED = Counter("recsys_outcome_stream_total", "Ratings of the outcome log "
                            "published to the feature stream: added, already_added (by "
                            "another read or replica), unreadable (a line cut by a crash)",
                            ["result"])
OUTCOME_STREAM_LAG = Gauge("recsys_outcome_stream_lag_seconds", "Age of the oldest "
                           "outcome not yet published to the feature stream (0: none waits)")
MODEL_VERSION = Gauge("recsys_model_version_loaded", "Model versions the server has loaded",
                      ["model", "version"])


def serve_metrics(port: int, host: str = "127.0.0.1") -> int:
    """Starts the /metrics HTTP endpoint; port 0 picks a free one. Returns the port."""
    server, _ = start_http_server(port, addr=host)
    return server.server_port
