"""Structured logs of the services (router, capture): one JSON object per line on stderr.

Every line about an event carries `client_id` and its Kafka coordinates
(`topic`, `partition`, `offset`) through `extra=`; any other `extra=` field becomes a key.
`configure` is called once per process at start, never at import.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable

import orjson

from analytics_core.settings import SettingsError

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


# Libraries that log a warning for every failed attempt of a request whose outcome the
# services log themselves, once and with the cause (a ClickHouse outage wrote ~12 such
# lines per retry, "Unexpected Http Driver Exception" without a detail among them). Their
# errors still show, and at DEBUG everything does.
_ECHOES = ("urllib3.connectionpool", "clickhouse_connect.driver")


# librdkafka's own lines, forwarded by the services' Kafka clients (`"logger"` in their
# config). With the brokers away it logs every reconnect attempt: ~20 lines a second.
LIBRDKAFKA_LOGGERS = ("router.kafka", "capture.kafka")
_DIGITS = re.compile(r"\d+")


class RepeatedLines(logging.Filter):
    """Lets a line through once per `window_s` for each shape (its text with the numbers
    left out: ports, thread ids, "after 0ms"); the first one let through after a quiet
    window carries `repeated`, how many of its shape were held back before it. At most
    `max_shapes` shapes are remembered (then the memory starts over)."""

    def __init__(
        self,
        window_s: float = 60.0,
        max_shapes: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.max_shapes = max_shapes
        self._clock = clock
        self._seen: dict[str, list[float]] = {}  # shape -> [let through at, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        shape = _DIGITS.sub("#", record.getMessage())
        now = self._clock()
        seen = self._seen.get(shape)
        if seen is not None and now - seen[0] < self.window_s:
            seen[1] += 1
            return False
        if seen is None and len(self._seen) >= self.max_shapes:
            self._seen.clear()
        if seen is not None and seen[1]:
            record.repeated = int(seen[1])
        self._seen[shape] = [now, 0]
        return True


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def level_from_env(raw: str | None) -> str:
    """LOG_LEVEL's level, in any case (default INFO); SettingsError names the allowed ones."""
    level = (raw or "INFO").strip().upper()
    if level not in LEVELS:
        raise SettingsError(f"LOG_LEVEL={raw!r} is not a log level; use one of {', '.join(LEVELS)}")
    return level


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _ECHOES:
        logging.getLogger(name).setLevel(
            logging.NOTSET if root.level <= logging.DEBUG else logging.ERROR
        )
    for name in LIBRDKAFKA_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RepeatedLines)]:
            logger.removeFilter(old)
        logger.addFilter(RepeatedLines())
