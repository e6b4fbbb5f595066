"""`python -m capture`: run the HTTP capture endpoint (see --help for every setting)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading

from analytics_core.kafka_start import wait_for_kafka
from analytics_core.logging_setup import configure, level_from_env
from analytics_core.settings import SERVER_ENV, SettingsError, describe
from capture import VERSION, open_files
from capture.config import CAPTURE_ENV, CaptureSettings
from capture.native_path import load_native

COMMON_ENV = (
    ("KAFKA_RAW_TOPIC", "shared_raw_events", "Topic the events are produced to"),
    *SERVER_ENV,
)

ENDPOINTS = """
Endpoints (POST; gzip bodies accepted; CORS for any allowed origin):
  Segment / RudderStack  /v1/batch /v1/track /v1/identify /v1/page /v1/screen /v1/group
                         /v1/alias (write key: HTTP Basic user, or writeKey in the body)
  PostHog                /batch/ /capture/ /e/ (api_key or token in the body)
  Browser SDK settings   GET /v1/projects/<writeKey>/settings (analytics-next's cdnURL),
                         GET /array/<token>/config and /flags/ (posthog-js: no flags),
                         GET /sourceConfig/ (RudderStack's configUrl); CAPTURE_PUBLIC_URL
  Operations             GET /healthz /readyz (Kafka reachable) /metrics (Prometheus)
"""


def build_parser() -> argparse.ArgumentParser:
    lines = [
        f"  {name:<36} default {default!s:<24} {meaning}"
        for name, default, meaning in (*COMMON_ENV, *CAPTURE_ENV)
    ]
    return argparse.ArgumentParser(
        prog="python -m capture",
        description=(
            "HTTP capture endpoint for analytics SDKs (Segment, RudderStack, PostHog): "
            "authenticates the write key, maps events to contract v1 and answers 200 only "
            "once Kafka has them. Configured only by environment variables:"
        ),
        epilog="\n".join(lines) + "\n" + ENDPOINTS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def listen_problem(host: str, port: int) -> str | None:
    """Why the service could not listen on host:port (taken, not this machine's), or None.
    Checked before granian starts: its own failure is a worker traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return (
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; set CAPTURE_PORT to a "
                "free port and CAPTURE_HOST to an address of this machine"
            )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--version", action="version", version=f"capture {VERSION}")
    parser.parse_args(argv)
    try:
        level = level_from_env(os.environ.get("LOG_LEVEL"))
        configure(level)
        settings = CaptureSettings.from_env()
        load_native(settings.native, settings.max_event_bytes)
        settings = open_files.fit(settings)
    except SettingsError as exc:
        print(f"capture: configuration error: {exc}", file=sys.stderr)
        return 2
    log = logging.getLogger("capture")
    log.info("configuration", extra={"settings": describe(settings)})
    busy = listen_problem(settings.host, settings.port)
    if busy:
        log.error(busy)
        return 2
    # Started while Kafka is away: wait for it before serving (SIGTERM/SIGINT end the wait).
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda _signum, _frame: stop.set())
    kafka = settings.common.kafka
    missing = wait_for_kafka(kafka, (kafka.raw_topic,), "capture.kafka", log, stop)
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if missing is not None:
        log.error(missing.detail)
        return 2
    if stop.is_set():
        log.info("stopped while waiting for Kafka")
        return 0
    from capture.server import build_server

    try:
        build_server(settings, level).serve()
    except OSError as exc:
        log.error(
            f"cannot listen on {settings.host}:{settings.port}: {exc}; "
            "set CAPTURE_PORT to a free port"
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
