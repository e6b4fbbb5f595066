"""Reading a consumed message's headers without trusting them (analytics_core.kafka_headers).

confluent-kafka's Message.headers() raises SystemError chained from a UnicodeDecodeError on
a header name that is not UTF-8; the stand-ins below raise exactly that (the router's
integration test sends the real thing, tests/integration/test_router_hostile.py)."""

from __future__ import annotations

from typing import Any

import pytest

from analytics_core.kafka_headers import UnreadableHeaders, read_headers, readable_headers


class Message:
    def __init__(self, headers: Any = None, error: BaseException | None = None) -> None:
        self._headers, self._error = headers, error

    def headers(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._headers


def _non_utf8_name() -> SystemError:
    try:
        b"\xff\xfe-name".decode("utf-8")
    except UnicodeDecodeError as exc:
        try:
            raise SystemError("headers returned a result with an exception set") from exc
        except SystemError as outer:
            return outer
    raise AssertionError("unreachable")


def test_readable_headers_and_none_pass_through() -> None:
    assert read_headers(Message([("a", b"1"), ("b", None)])) == [("a", b"1"), ("b", None)]
    assert read_headers(Message(None)) is None
    assert readable_headers(Message(None)) == ()


def test_a_header_name_that_is_not_utf8_is_reported_not_raised() -> None:
    got = read_headers(Message(error=_non_utf8_name()))
    assert isinstance(got, UnreadableHeaders)
    assert "not UTF-8" in got.detail and "\\xff\\xfe-name" in got.detail
    assert readable_headers(Message(error=_non_utf8_name())) == ()


def test_other_errors_are_not_mistaken_for_bad_headers() -> None:
    with pytest.raises(SystemError):
        read_headers(Message(error=SystemError("something else")))
    with pytest.raises(MemoryError):
        read_headers(Message(error=MemoryError()))
