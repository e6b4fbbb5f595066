"""Prometheus metrics of the capture service.

Every name here is part of the operations contract: deploy/ alert rules and the Grafana
dashboard refer to them, and tests/unit/test_deploy_monitoring.py checks they exist.
Labels are bounded: `route` is one of the fixed routes, `client_id` only ever holds an
authenticated client (bounded by the registry), `code` is a fixed set of reasons.
`child` keeps each labelled child once made, so a request does not pay for
prometheus_client's `labels()` (a lock and validation per call) on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Children:
    """A metric's labelled children, made once per label values."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._made: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._made.get(values)
        if child is None:
            child = self._made[values] = self._metric.labels(*values)
        return child


class CaptureMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "capture_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "capture_request_duration_seconds",
            "Time from the request body read to the answer (includes Kafka's ack)",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.request_bytes = Counter(
            "capture_request_bytes",
            "Request body bytes received (on the wire)",
            ["route"],
            registry=r,
        )
        self.decoded_bytes = Counter(
            "capture_decoded_bytes", "Request body bytes after decompression", ["route"], registry=r
        )
        self.encodings = Counter(
            "capture_request_encodings",
            "Request bodies by encoding (identity, gzip, deflate, gzip-js)",
            ["route", "encoding"],
            registry=r,
        )
        self.events_accepted = Counter(
            "capture_events_accepted",
            "Events acknowledged by Kafka and answered 200",
            ["client_id"],
            registry=r,
        )
        self.events_rejected = Counter(
            "capture_events_rejected",
            "Events refused inside an accepted request (invalid or too large)",
            ["code"],
            registry=r,
        )
        self.events_deduplicated = Counter(
            "capture_events_deduplicated",
            "Events of SDK retries not produced again (their first copy was in Kafka)",
            registry=r,
        )
        self.quota_refusals = Counter(
            "capture_quota_refusals",
            "Requests answered 429 (over the client's quota)",
            ["client_id"],
            registry=r,
        )
        self.auth_failures = Counter(
            "capture_auth_failures", "Requests refused by authentication", ["code"], registry=r
        )
        self.unavailable = Counter(
            "capture_unavailable",
            "Requests answered 503, by cause (kafka, registry, overload)",
            ["cause"],
            registry=r,
        )
        self.kafka_up = Gauge(
            "capture_kafka_up", "1 while Kafka answers the readiness probe", registry=r
        )
        self.kafka_queue = Gauge(
            "capture_kafka_queue_messages", "Messages waiting in the producer queue", registry=r
        )
        self.inflight_requests = Gauge(
            "capture_inflight_requests", "Requests being processed", registry=r
        )
        self.inflight_bytes = Gauge(
            "capture_inflight_bytes", "Request body bytes held by requests in flight", registry=r
        )
        self.retry_memory = Gauge(
            "capture_retry_memory_events", "Event ids remembered for SDK retries", registry=r
        )
        self.quota_local_fallback = Gauge(
            "capture_quota_local_fallback",
            "1 while Redis is unreachable and quotas are enforced per process",
            registry=r,
        )
        self.up = Gauge("capture_up", "1 while the capture service serves", registry=r)

        self.c_requests = Children(self.requests)
        self.c_request_seconds = Children(self.request_seconds)
        self.c_request_bytes = Children(self.request_bytes)
        self.c_decoded_bytes = Children(self.decoded_bytes)
        self.c_encodings = Children(self.encodings)
        self.c_events_accepted = Children(self.events_accepted)

    def watch_inflight(
        self, requests: Callable[[], float], body_bytes: Callable[[], float]
    ) -> None:
        """The in-flight gauges read their values when scraped (no work per request)."""
        self.inflight_requests.set_function(requests)
        self.inflight_bytes.set_function(body_bytes)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
