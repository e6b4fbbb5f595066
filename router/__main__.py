"""`python -m router`: run the real-time router (see --help for every setting)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from analytics_core import pg
from analytics_core.kafka_start import wait_for_kafka
from analytics_core.logging_setup import configure, level_from_env
from analytics_core.settings import SERVER_ENV, SettingsError, describe
from router import VERSION
from router.config import ROUTER_ENV, RouterSettings
from router.metrics import HealthServer, RouterMetrics
from router.service import Router

COMMON_ENV = (
    ("KAFKA_RAW_TOPIC", "shared_raw_events", "Topic the router consumes"),
    ("KAFKA_DEAD_LETTER_TOPIC", "shared_dead_letter", "Topic for dead letters"),
    *SERVER_ENV,
)


def build_parser() -> argparse.ArgumentParser:
    lines = [
        f"  {name:<40} default {default!s:<28} {meaning}"
        for name, default, meaning in (*COMMON_ENV, *ROUTER_ENV)
    ]
    return argparse.ArgumentParser(
        prog="python -m router",
        description=(
            "Consume shared_raw_events, authenticate and validate each event, write it to its "
            "client's ClickHouse database or dead-letter it with a reason. "
            "Configured only by environment variables:"
        ),
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--version", action="version", version=f"router {VERSION}")
    parser.parse_args(argv)
    import os

    try:
        configure(level_from_env(os.environ.get("LOG_LEVEL")))
        settings = RouterSettings.from_env()
    except SettingsError as exc:
        print(f"router: configuration error: {exc}", file=sys.stderr)
        return 2
    log = logging.getLogger("router")
    log.info("configuration", extra={"settings": describe(settings)})
    # A hung PostgreSQL must not hold the routing loop: client lookups give up in time.
    pg.bound_every_call(settings.common.postgres.call_timeout_s)
    metrics = RouterMetrics()
    router = Router(settings, metrics=metrics)
    server = None
    if settings.metrics_port:
        try:
            server = HealthServer(
                metrics, router.ready, settings.metrics_port, settings.metrics_host
            )
        except OSError as exc:
            log.error(
                f"cannot serve metrics on port {settings.metrics_port}: {exc}; "
                "set ROUTER_METRICS_PORT to a free port (or 0: none) and ROUTER_METRICS_HOST "
                "to an address of this machine"
            )
            return 2
        server.start()

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received; stopping", extra={"signal": signum})
        router.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Started while Kafka is away: wait for it (readyz 503: no partitions assigned yet).
    kafka = settings.common.kafka
    topics = (kafka.raw_topic, kafka.dead_letter_topic)
    missing = wait_for_kafka(kafka, topics, "router.kafka", log, router.stop_event)
    if missing is not None:
        log.error(missing.detail)
        code = 2
    elif router.stop_event.is_set():
        code = 0  # stopped while waiting for Kafka
    else:
        router.run()
        code = 0
    if server is not None:
        server.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
