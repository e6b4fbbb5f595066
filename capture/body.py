"""Turning an HTTP request body into a JSON document (pure; no I/O).

Accepted encodings, the union of what the supported SDKs send:
- `Content-Encoding: gzip` (Segment, RudderStack and PostHog Python SDKs with gzip on);
- PostHog's browser encodings: `?compression=gzip-js` (gzip bytes sent as text/plain) and
  `?compression=base64` / form body `data=<base64 JSON>` (sendBeacon);
- a gzip body without the header (recognised by its magic bytes);
- plain JSON as application/json, text/plain or no content type.

Invariant: decoded bytes never exceed `max_decoded_bytes` (decompression stops there), so
a gzip bomb costs at most that much memory.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

GZIP_MAGIC = b"\x1f\x8b"
JSON_TYPES = frozenset({"", "application/json", "text/plain", "application/x-json", "text/json"})
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class BodyProblem:
    """The request cannot be read: an HTTP status and a reason the caller can read."""

    status: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Decoded:
    doc: Any
    decoded_bytes: int


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def gunzip(data: bytes, limit: int) -> bytes | BodyProblem:
    """Decompress a gzip (or zlib) stream, refusing to produce more than `limit` bytes."""
    wbits = 16 + zlib.MAX_WBITS if data[:2] == GZIP_MAGIC else zlib.MAX_WBITS
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        return BodyProblem(400, "invalid_compression", f"body is not valid gzip/deflate: {exc}")
    if len(out) > limit or d.unconsumed_tail:
        return BodyProblem(
            413, "payload_too_large", f"decompressed body is larger than {limit} bytes"
        )
    if not d.eof:
        return BodyProblem(400, "invalid_compression", "gzip body is truncated")
    return out


def decode_body(
    raw: bytes,
    *,
    content_type: str,
    content_encoding: str,
    compression: str,
    max_decoded_bytes: int,
) -> Decoded | BodyProblem:
    """The JSON document of a request body, or why it cannot be read."""
    if not raw:
        return BodyProblem(400, "invalid_request", "request body is empty")
    encoding = content_encoding.strip().lower()
    compression = compression.strip().lower()
    mtype = media_type(content_type)
    data: bytes | BodyProblem = raw
    if encoding in ("gzip", "x-gzip", "deflate"):
        data = gunzip(raw, max_decoded_bytes)
    elif encoding not in ("", "identity"):
        return BodyProblem(
            415,
            "unsupported_encoding",
            f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding",
        )
    elif compression == "gzip-js" or raw[:2] == GZIP_MAGIC:
        data = gunzip(raw, max_decoded_bytes)
    elif compression in ("lz64", "lz-string"):
        return BodyProblem(
            415, "unsupported_encoding", "lz-string bodies are not supported; use gzip-js"
        )
    if isinstance(data, BodyProblem):
        return data
    if mtype == FORM_TYPE:
        data = _form_data(data, base64_expected=compression == "base64")
        if isinstance(data, BodyProblem):
            return data
    elif compression == "base64":
        data = _b64(data)
        if isinstance(data, BodyProblem):
            return data
    elif mtype not in JSON_TYPES:
        return BodyProblem(
            415,
            "unsupported_media_type",
            f"Content-Type {mtype!r} is not supported; send "
            "application/json (text/plain and form data= are accepted too)",
        )
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return BodyProblem(400, "invalid_json", f"body is not valid JSON: {exc}")
    return Decoded(doc, len(data))


def _form_data(data: bytes, *, base64_expected: bool) -> bytes | BodyProblem:
    try:
        form = parse_qs(data.decode("utf-8"), max_num_fields=100)
    except (UnicodeDecodeError, ValueError) as exc:
        return BodyProblem(400, "invalid_request", f"form body cannot be read: {exc}")
    values = form.get("data")
    if not values:
        return BodyProblem(400, "invalid_request", "form body has no 'data' field")
    value = values[0].encode("utf-8")
    if base64_expected or not value.lstrip().startswith((b"{", b"[")):
        return _b64(value)
    return value


def _b64(value: bytes) -> bytes | BodyProblem:
    try:
        return base64.b64decode(value.strip() + b"=" * (-len(value.strip()) % 4), validate=False)
    except (binascii.Error, ValueError) as exc:
        return BodyProblem(400, "invalid_request", f"data is not valid base64: {exc}")
