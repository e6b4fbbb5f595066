"""Serving the ASGI app with granian (chosen for its parser's bounds below; the speed of the
candidates is measured by bench/bench_capture.py and compared in the README).

granian's HTTP/1 parser is hyper's (Rust): request headers must arrive within
CAPTURE_HEADER_TIMEOUT_MS and fit its read buffer, so slow-header and huge-header clients
are cut off before any Python runs. granian's backpressure limits connections, not
requests (an idle keep-alive connection holds its place until it closes), so it is set to
CAPTURE_MAX_CONNECTIONS (more wait in the accept queue), and the app itself answers 503
past CAPTURE_MAX_CONCURRENT_REQUESTS requests in progress. With the backpressure at the
request limit, as it was, a thousand idle SDK connections left every new one unserved
(seconds of wait in the benchmark, for as long as they stayed open). SIGTERM stops
accepting, lets requests in flight finish (CAPTURE_SHUTDOWN_TIMEOUT_S), then the app's
lifespan shutdown flushes the Kafka producer.
"""

from __future__ import annotations

import ctypes
import math
import signal
import sys
from typing import Any

from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.mp import MPServer

from capture.config import CaptureSettings

HEADER_BUFFER_BYTES = 64 * 1024  # request line + headers; larger is refused by the parser


def log_config(level: str) -> dict[str, Any]:
    """granian's logging as JSON lines on stderr, like every other log line of ours."""
    json_handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "analytics_core.logging_setup.JsonFormatter"}},
        "filters": {"repeats": {"()": "analytics_core.logging_setup.RepeatedLines"}},
        "handlers": {"console": json_handler, "access": json_handler},
        "root": {"handlers": ["console"], "level": level.upper()},
        "loggers": {
            # librdkafka's reconnect lines while Kafka is away: once a minute per shape.
            "capture.kafka": {"filters": ["repeats"]},
            "_granian": {"handlers": ["console"], "level": "WARNING", "propagate": False},
            "granian.access": {"handlers": ["access"], "level": "WARNING", "propagate": False},
        },
    }


def build_server(
    settings: CaptureSettings, log_level: str, target: str = "capture.app:create_app"
) -> MPServer:
    """`target` is an ASGI app factory (the benchmark serves its baseline the same way)."""
    # granian's process server (what `granian.Granian` is on a GIL build of Python).
    return MPServer(
        target,
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        backlog=2048,
        backpressure=settings.max_connections,
        http1_settings=HTTP1Settings(
            header_read_timeout=settings.header_timeout_ms,
            keep_alive=True,
            max_buffer_size=HEADER_BUFFER_BYTES,
        ),
        log_enabled=True,
        log_level=LogLevels(log_level.lower()),
        log_dictconfig=log_config(log_level),
        log_access=False,
        workers_kill_timeout=math.ceil(settings.shutdown_timeout_s) + 5,
    )


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def stop_with_master() -> bool:
    """Ask the kernel to send this (worker) process SIGTERM when its parent, granian's
    master, dies. Without it a master killed with SIGKILL (a crash, `kill -9`) leaves the
    worker serving the port and reconnecting to Kafka for good; with it the worker drains
    its requests and flushes the producer, as on any SIGTERM. Linux only; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)) == 0
