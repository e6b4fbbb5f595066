"""Prometheus metrics of the capture service.

Every name here is part of the operations contract: deploy/ alert rules and the Grafana
dashboard refer to them, and tests/unit/test_deploy_monitoring.py checks they exist.
Labels are bounded: `route` is one of the fixed routes, `client_id` only ever holds an
authenticated client (bounded by the registry), `code` is a fixed set of reasons.

The metrics every request updates (`Tally`, `Buckets`) are plain numbers, exported by a
collector when /metrics is read: a prometheus_client child costs a lock and a few calls
per update, several times per request. Invariant: they are only updated and read on the
event loop's thread (the service answers /metrics there too), so they need no lock.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class Tally:
    """A labelled counter as plain numbers (see the module docstring)."""

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name = name
        self.doc = doc
        self.labels = list(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def add(self, labels: tuple[str, ...], amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, value in self.values.items():
            family.add_metric(list(labels), value)
        return family


class Buckets:
    """A histogram with one label, as plain numbers (see the module docstring)."""

    def __init__(self, name: str, doc: str, label: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.doc = doc
        self.label = label
        self.bounds = list(bounds)
        self.counts: dict[str, list[int]] = {}  # one count per bound, then +Inf
        self.sums: dict[str, float] = {}

    def observe(self, label: str, value: float) -> None:
        counts = self.counts.get(label)
        if counts is None:
            counts = self.counts[label] = [0] * (len(self.bounds) + 1)
            self.sums[label] = 0.0
        counts[bisect.bisect_left(self.bounds, value)] += 1  # le: bound >= value
        self.sums[label] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=[self.label])
        for label, counts in self.counts.items():
            cumulative, buckets = 0, []
            for bound, count in zip([*self.bounds, float("inf")], counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric([label], buckets, self.sums[label])
        return family


class _PlainMetrics(Collector):
    def __init__(self, metrics: Sequence[Tally | Buckets]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self._metrics:
            yield metric.family()


class CaptureMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # Updated by every request: plain numbers (see the module docstring).
        self.requests = Tally(
            "capture_requests", "HTTP requests by route and status", ["route", "status"]
        )
        self.request_seconds = Buckets(
            "capture_request_duration_seconds",
            "Time from the request body read to the answer (includes Kafka's ack)",
            "route",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.request_bytes = Tally(
            "capture_request_bytes", "Request body bytes received (on the wire)", ["route"]
        )
        self.decoded_bytes = Tally(
            "capture_decoded_bytes", "Request body bytes after decompression", ["route"]
        )
        self.encodings = Tally(
            "capture_request_encodings",
            "Request bodies by encoding (identity, gzip, deflate, gzip-js)",
            ["route", "encoding"],
        )
        self.events_accepted = Tally(
            "capture_events_accepted",
            "Events acknowledged by Kafka and answered 200",
            ["client_id"],
        )
        self.native = Tally(
            "capture_native_batches",
            "Segment batches (with the key in the header) by what mapped them: native (the "
            "compiled fast path) or python (the compiled path left it, or is not installed)",
            ["path"],
        )
        self.stale_verdicts = Tally(
            "capture_auth_stale_verdicts",
            "Requests answered with a write key's last verdict: the registry was late or away",
            [],
        )
        r.register(
            _PlainMetrics(
                [
                    self.stale_verdicts,
                    self.native,
                    self.requests,
                    self.request_seconds,
                    self.request_bytes,
                    self.decoded_bytes,
                    self.encodings,
                    self.events_accepted,
                ]
            )
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

    def watch_inflight(
        self, requests: Callable[[], float], body_bytes: Callable[[], float]
    ) -> None:
        """The in-flight gauges read their values when scraped (no work per request)."""
        self.inflight_requests.set_function(requests)
        self.inflight_bytes.set_function(body_bytes)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
