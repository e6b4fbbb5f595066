"""HTTP answers of the capture API (pure).

Bodies are JSON readable by every supported SDK: Segment's and RudderStack's read `code`
and `message`, PostHog's read `detail`. Status codes follow what the SDKs retry:
400/401/403/404/413/415 are final for all of them; 408, 429 and 503 are retried, and 429
and 503 carry `Retry-After`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from capture.mapping import EventRejected

MAX_LISTED_REJECTIONS = 20
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = field(default=())
    content_type: str = JSON


def _rejections(rejected: Sequence[EventRejected]) -> list[dict[str, object]]:
    return [
        {"index": r.index, "code": r.code, "message": r.message}
        for r in rejected[:MAX_LISTED_REJECTIONS]
    ]


def ok(accepted: int, rejected: Sequence[EventRejected]) -> Response:
    if not rejected:
        return _all_accepted(accepted)
    doc: dict[str, object] = {"success": True, "status": 1, "accepted": accepted}
    doc["rejected_count"] = len(rejected)
    doc["rejected"] = _rejections(rejected)
    return Response(200, orjson.dumps(doc))


@functools.lru_cache(maxsize=1024)
def _all_accepted(accepted: int) -> Response:
    """The answer when every event was accepted: the same few batch sizes come again and
    again, so each is built once (a Response is immutable)."""
    return Response(200, orjson.dumps({"success": True, "status": 1, "accepted": accepted}))


def error(
    status: int,
    code: str,
    message: str,
    *,
    retry_after_s: int | None = None,
    rejected: Sequence[EventRejected] = (),
) -> Response:
    doc: dict[str, object] = {
        "success": False,
        "status": 0,
        "code": code,
        "message": message,
        "detail": message,
    }
    if rejected:
        doc["rejected_count"] = len(rejected)
        doc["rejected"] = _rejections(rejected)
    headers = () if retry_after_s is None else (("retry-after", str(retry_after_s)),)
    return Response(status, orjson.dumps(doc), headers)


def plain(status: int, text: str) -> Response:
    return Response(status, text.encode(), content_type="text/plain; charset=utf-8")
