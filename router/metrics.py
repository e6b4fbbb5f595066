"""Prometheus metrics of the router, and the HTTP endpoint serving them with health checks.

Every metric name here is part of the operations contract: deploy/ alert rules
and the Grafana dashboard refer to them, and a test checks they are exported.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger("router")


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_consumed = Counter(
            "router_messages_consumed", "Kafka messages consumed", registry=r
        )
        self.events_consumed = Counter(
            "router_events_consumed",
            "Events consumed (a batch message counts each event)",
            registry=r,
        )
        self.events_routed = Counter(
            "router_events_routed", "Events written to a client database", ["client_id"], registry=r
        )
        self.events_dead_lettered = Counter(
            "router_events_dead_lettered",
            "Events sent to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.unprocessable = Counter(
            "router_unprocessable_messages",
            "Messages dead-lettered as unprocessable (a failure that is not an outage), by "
            "error class",
            ["error"],
            registry=r,
        )
        self.retries = Counter(
            "router_retries",
            "Retries by kind (registry, clickhouse_outage, rejected)",
            ["kind"],
            registry=r,
        )
        self.insert_errors = Counter(
            "router_clickhouse_insert_errors", "Failed ClickHouse INSERTs", ["kind"], registry=r
        )
        self.batch_rows = Histogram(
            "router_batch_rows",
            "Rows per INSERT",
            buckets=(1, 10, 100, 1000, 5000, 10000, 25000, 50000, 100000),
            registry=r,
        )
        self.insert_seconds = Histogram(
            "router_insert_seconds",
            "INSERT latency",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.e2e_latency = Histogram(
            "router_end_to_end_latency_seconds",
            "Produce time (event sent_at, else Kafka timestamp) to the row visible (its INSERT "
            "acknowledged)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.consumer_lag = Gauge(
            "router_consumer_lag",
            "Messages between the committed offset and the partition end (what a restart would "
            "read again)",
            ["partition"],
            registry=r,
        )
        self.buffered_rows = Gauge("router_buffered_rows", "Rows waiting for INSERT", registry=r)
        self.catching_up = Gauge(
            "router_catching_up",
            "1 while a Kafka backlog is drained (ROUTER_CATCHUP_MAX_WAIT_MS applies)",
            registry=r,
        )
        self.buffered_bytes = Gauge(
            "router_buffered_bytes", "Encoded bytes of the rows waiting for INSERT", registry=r
        )
        self.paused = Gauge(
            "router_paused", "1 while consumption is paused (back-pressure)", registry=r
        )
        self.up = Gauge("router_up", "1 while the router loop runs", registry=r)
        self.target_up = Gauge(
            "router_clickhouse_target_up",
            "1 while the ClickHouse target took this router's last write, 0 while it is "
            "unreachable (its clients' rows wait; the other targets are written)",
            ["target"],
            registry=r,
        )
        self.last_commit_ts = Gauge(
            "router_last_commit_timestamp_seconds",
            "Unix time of the last offset commit",
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A scraper or probe that hung up (timed out, reset) is its own business: not a
        traceback on stderr (the base class prints one, outside the JSON logs). Any other
        error is logged as a JSON line."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            return
        log.warning("metrics request failed", exc_info=error)


class HealthServer:
    """Serves /metrics, /healthz (process alive) and /readyz (`ready()` is True)."""

    def __init__(
        self,
        metrics: RouterMetrics,
        ready: Callable[[], bool],
        port: int,
        host: str = "127.0.0.1",
    ) -> None:
        metrics_ref, ready_ref = metrics, ready

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    body, status, ctype = metrics_ref.exposition(), 200, CONTENT_TYPE_LATEST
                elif self.path.startswith("/healthz"):
                    body, status, ctype = b"ok\n", 200, "text/plain"
                elif self.path.startswith("/readyz"):
                    ok = ready_ref()
                    body = b"ready\n" if ok else b"not ready\n"
                    status, ctype = (200 if ok else 503), "text/plain"
                else:
                    body, status, ctype = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = _QuietServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
