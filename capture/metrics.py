"""Prometheus metrics of the capture service.

Every name here is part of the operations contract: deploy/ alert rules and the Grafana
dashboard refer to them, and tests/unit/test_deploy_monitoring.py checks they exist.
Labels are bounded: `route` is one of the fixed routes, `client_id` only ever holds an
authenticated client (bounded by the registry), `code` is a fixed set of reasons.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
