"""The benchmark's clients and request bodies (shared by its load runs and the in-process
request-path measurement)."""

from __future__ import annotations

import base64
import json
from typing import Any

CLIENTS = 100
NOISY = "bench-cap-noisy"


def client_id(i: int) -> str:
    return f"bench-cap-{i:03d}"


def key_of(cid: str) -> str:
    return f"{cid}-key"


def basic(cid: str) -> str:
    return "Basic " + base64.b64encode(f"{key_of(cid)}:".encode()).decode()


def event_template(i: int) -> dict[str, Any]:
    """A ~450-byte Segment track call with a message id, as SDKs send; @SEQ@ makes each
    request's events distinct."""
    return {
        "type": "track",
        "messageId": f"ajs-@SEQ@-{i}",
        "event": "Order Completed",
        "userId": f"user-{i % 97}",
        "timestamp": "2026-11-27T10:00:00.000Z",
        "properties": {
            "i": i,
            "url": "/checkout/complete",
            "revenue": 42.5,
            "currency": "EUR",
            "items": [{"sku": "sku-123", "qty": 2}, {"sku": "sku-456", "qty": 1}],
        },
        "context": {
            "library": {"name": "analytics-python", "version": "2.4.0"},
            "ip": "203.0.113.9",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) bench",
        },
    }


def body_of(batch: int, seq: str | None = None) -> bytes:
    text = json.dumps({"batch": [event_template(i) for i in range(batch)]})
    return (text if seq is None else text.replace("@SEQ@", seq)).encode()
