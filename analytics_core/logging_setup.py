"""Structured logs of the services (router, capture): one JSON object per line on stderr.

Every line about an event carries `client_id` and its Kafka coordinates
(`topic`, `partition`, `offset`) through `extra=`; any other `extra=` field becomes a key.
`configure` is called once per process at start, never at import.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

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
