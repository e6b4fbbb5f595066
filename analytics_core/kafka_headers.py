"""A consumed message's Kafka headers, read without trusting them.

confluent-kafka decodes header names as UTF-8 and raises SystemError (chained from a
UnicodeDecodeError) when one is not. Python and Java producers can not send such a name,
but Go, Rust and C producers can. Every reader of a topic goes through this module, so one
such message can not stop a consumer; the router dead-letters it (`invalid_headers`).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

Headers = Sequence[tuple[str, bytes | None]]

# Invariant: headers() is called through PyObject_Call (methodcaller), never as
# `msg.headers()`. CPython 3.11 specialises a hot call of a C method and then skips the check
# that turns "returned a result with an exception set" into SystemError: the pending
# UnicodeDecodeError surfaced at a later, unrelated line of the router's loop.
_HEADERS = operator.methodcaller("headers")


class CarriesHeaders(Protocol):
    # confluent-kafka's stubs say a dict or (str, str | bytes | None) pairs; consumed
    # messages always carry a list of (str, bytes | None) or None.
    def headers(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class UnreadableHeaders:
    detail: str


def read_headers(msg: CarriesHeaders) -> Headers | UnreadableHeaders | None:
    """The message's headers (None when it has none), or why they can not be read."""
    try:
        return cast(Headers | None, _HEADERS(msg))
    except (SystemError, UnicodeDecodeError) as exc:
        cause = exc if isinstance(exc, UnicodeDecodeError) else exc.__cause__ or exc.__context__
        if not isinstance(cause, UnicodeDecodeError):
            raise
        bad = cause.object[:60] if isinstance(cause.object, bytes) else b""
        return UnreadableHeaders(f"a Kafka header name is not UTF-8: {bad!r}")


def readable_headers(msg: CarriesHeaders) -> Headers:
    """The headers, or none at all when they can not be read: for readers that only look
    for headers of their own (a dead letter's envelope then reads as missing)."""
    headers = read_headers(msg)
    return headers if isinstance(headers, Sequence) else ()
