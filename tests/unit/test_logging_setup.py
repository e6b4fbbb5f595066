"""The services' one JSON log formatter (`analytics_core.logging_setup`): one JSON object a
line, `extra=` fields as keys (client id, Kafka coordinates), exceptions kept."""

from __future__ import annotations

import importlib
import logging
import sys

import orjson

from analytics_core.logging_setup import JsonFormatter
from capture.server import log_config


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("router", logging.WARNING, __file__, 1, "routed %s", ("x",), None)
    record.__dict__.update(extra)
    return record


def test_a_line_is_one_json_object_with_the_event_coordinates() -> None:
    line = JsonFormatter().format(_record(client_id="acme", topic="t", partition=2, offset=7))
    assert "\n" not in line
    doc = orjson.loads(line)
    assert doc["level"] == "warning" and doc["logger"] == "router" and doc["msg"] == "routed x"
    assert (doc["client_id"], doc["topic"], doc["partition"], doc["offset"]) == ("acme", "t", 2, 7)
    assert doc["ts"].endswith("Z") and "args" not in doc and "_private" not in doc


def test_an_exception_is_kept_in_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()
    doc = orjson.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in doc["exc"]


def test_capture_server_logs_through_the_same_formatter() -> None:
    module, name = log_config("info")["formatters"]["json"]["()"].rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is JsonFormatter


def test_library_retry_warnings_are_left_to_the_services_own_line(capsys) -> None:  # type: ignore[no-untyped-def]
    from analytics_core.logging_setup import configure

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure("INFO")
        logging.getLogger("urllib3.connectionpool").warning("Retrying (Retry(total=0))")
        logging.getLogger("clickhouse_connect.driver._backend.http_sync").warning("Unexpected")
        logging.getLogger("clickhouse_connect.driver.httpclient").error("a real error")
        logging.getLogger("router").warning("clickhouse unavailable; holding rows")
        lines = [orjson.loads(x) for x in capsys.readouterr().err.splitlines()]
        assert [d["msg"] for d in lines] == ["a real error", "clickhouse unavailable; holding rows"]
        configure("DEBUG")
        logging.getLogger("urllib3.connectionpool").warning("Retrying (Retry(total=0))")
        assert "Retrying" in capsys.readouterr().err
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name in ("urllib3.connectionpool", "clickhouse_connect.driver"):
            logging.getLogger(name).setLevel(logging.NOTSET)
