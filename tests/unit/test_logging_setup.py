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


def test_librdkafka_reconnect_lines_come_once_a_minute_with_how_many_were_held_back(
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    """With Kafka away librdkafka logs each reconnect attempt (~20 lines a second were seen
    in the router's log); one line a minute per shape says the same."""
    from analytics_core.logging_setup import RepeatedLines

    now = [100.0]
    repeats = RepeatedLines(window_s=60, clock=lambda: now[0])

    def line(msg: str) -> logging.LogRecord:
        return logging.LogRecord("router.kafka", logging.ERROR, __file__, 1, msg, None, None)

    fail = "FAIL [c#consumer-{}] 127.0.0.1:29192/bootstrap: Connect failed (after {}ms in CONNECT)"
    first = line(fail.format(2, 0))
    assert repeats.filter(first) and not hasattr(first, "repeated")
    for i in range(400):
        now[0] += 0.05
        assert not repeats.filter(line(fail.format(2, i % 7)))  # same shape, other numbers
    other = line("FAIL 127.0.0.1:29192/1: Disconnected")
    assert repeats.filter(other)  # another shape passes at once
    now[0] = 100.0 + 60.0
    after = line(fail.format(3, 1))
    assert repeats.filter(after) and after.repeated == 400  # type: ignore[attr-defined]
    assert orjson.loads(JsonFormatter().format(after))["repeated"] == 400
    quiet = line(fail.format(3, 1))
    now[0] += 61
    assert repeats.filter(quiet) and not hasattr(quiet, "repeated")

    # The services' Kafka loggers carry it once, however often logging is configured.
    from analytics_core.logging_setup import LIBRDKAFKA_LOGGERS, configure

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure("INFO")
        configure("INFO")
        for name in LIBRDKAFKA_LOGGERS:
            kafka_log = logging.getLogger(name)
            assert [type(f) for f in kafka_log.filters] == [RepeatedLines]
            for _ in range(50):
                kafka_log.error("FAIL 127.0.0.1:29192/bootstrap: Connect refused (after 0ms)")
        lines = [orjson.loads(x) for x in capsys.readouterr().err.splitlines()]
        assert [d["logger"] for d in lines] == list(LIBRDKAFKA_LOGGERS)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name in LIBRDKAFKA_LOGGERS:
            logging.getLogger(name).filters.clear()
    # capture's worker is configured by granian from log_config: the same filter there.
    config = log_config("info")
    assert config["loggers"]["capture.kafka"]["filters"] == ["repeats"]
    module, name = config["filters"]["repeats"]["()"].rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is RepeatedLines
