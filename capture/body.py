"""Turning an HTTP request body into the JSON text its wire format reads (pure; no I/O).

Accepted encodings, the union of what the supported SDKs send:
- `Content-Encoding: gzip` (Segment, RudderStack and PostHog Python SDKs with gzip on);
- posthog-js's `?compression=gzip-js` (gzip bytes sent as text/plain, also by sendBeacon);
- a gzip body without the header (recognised by its magic bytes);
- plain JSON as application/json, text/plain or no content type, and a JSON object or
  array labelled as a form (RudderStack's Node SDK labels its gzip'd batches so).
Older browser encodings (form `data=`, base64, lz-string) are refused with 415: the
posthog-js version we test with never sends them, and untested decoders are not kept.

Invariants: decoded bytes never exceed `max_decoded_bytes` (decompression stops there), so
a gzip bomb costs at most that much memory; decoded bytes are valid UTF-8 (the wire formats
pass values through as raw JSON text, which their decoder does not check), and hold no
escaped lone UTF-16 surrogate (each becomes `\\ufffd`) and no leading byte order mark (see
analytics_core.json_text), so one string cut inside an emoji, or a BOM added by a Windows
tool, does not cost the request its events.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

from analytics_core.json_text import repaired

GZIP_MAGIC = b"\x1f\x8b"
JSON_TYPES = frozenset({"", "application/json", "text/plain", "application/x-json", "text/json"})
FORM_TYPE = "application/x-www-form-urlencoded"  # refused: see the module docstring


@dataclass(frozen=True, slots=True)
class BodyProblem:
    """The request cannot be read: an HTTP status and a reason the caller can read."""

    status: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Decoded:
    data: bytes  # JSON text, valid UTF-8
    encoding: str  # how the body came: identity, gzip, deflate, gzip-js


def invalid_json(exc: Exception) -> BodyProblem:
    """The answer to a body its wire format's decoder could not read as JSON."""
    if isinstance(exc, RecursionError):
        return BodyProblem(400, "invalid_json", "body is not valid JSON: it nests too deeply")
    return BodyProblem(400, "invalid_json", f"body is not valid JSON: {exc}")


# Clients send the same few Content-Type values: each is parsed once (bounded).
@functools.lru_cache(maxsize=256)
def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def gunzip(data: bytes, limit: int) -> bytes | BodyProblem:
    """Decompress a gzip (or zlib) stream, refusing to produce more than `limit` bytes. A
    gzip body may hold several members (RFC 1952), read one after the other; bytes after
    the last one that are not a member are refused, never ignored."""
    gzip_body = data[:2] == GZIP_MAGIC
    parts: list[bytes] = []
    size = 0
    rest = data
    while True:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip_body else zlib.MAX_WBITS)
        try:
            out = d.decompress(rest, limit - size + 1)
        except zlib.error as exc:
            return BodyProblem(400, "invalid_compression", f"body is not valid gzip/deflate: {exc}")
        size += len(out)
        if size > limit or d.unconsumed_tail:
            return BodyProblem(
                413, "payload_too_large", f"decompressed body is larger than {limit} bytes"
            )
        if not d.eof:
            return BodyProblem(400, "invalid_compression", "gzip body is truncated")
        parts.append(out)
        rest = d.unused_data
        if not rest:
            return b"".join(parts)
        if not (gzip_body and rest[:2] == GZIP_MAGIC):
            return BodyProblem(
                400,
                "invalid_compression",
                f"{len(rest)} byte(s) after the end of the compressed body",
            )


def _looks_like_json(data: bytes) -> bool:
    """A JSON object or array, not a form: RudderStack's Node SDK (3.x, axios) labels its
    gzip'd JSON batches application/x-www-form-urlencoded, and a form (`data=...`) never
    starts with `{` or `[`. The wire format's decoder still decides whether it is JSON."""
    return data.lstrip(b" \t\r\n")[:1] in (b"{", b"[")


# posthog-js's `?compression=` values (and gzip, which some clients name so); base64 and
# lz-string are refused below with their own message.
KNOWN_COMPRESSIONS = frozenset({"", "gzip-js", "gzip", "base64", "lz64", "lz-string"})


def decode_body(
    raw: bytes,
    *,
    content_type: str,
    content_encoding: str,
    compression: str,
    max_decoded_bytes: int,
) -> Decoded | BodyProblem:
    """The JSON text of a request body, or why it cannot be read."""
    if not raw:
        return BodyProblem(400, "invalid_request", "request body is empty")
    encoding = content_encoding.strip().lower() if content_encoding else ""
    compression = compression.strip().lower() if compression else ""
    if compression not in KNOWN_COMPRESSIONS:  # a body read as plain JSON would be garbage
        return BodyProblem(
            415,
            "unsupported_encoding",
            f"compression {compression!r} is not supported; send gzip-js, gzip or none",
        )
    mtype = media_type(content_type)
    data: bytes | BodyProblem = raw
    how = "identity"
    if encoding in ("gzip", "x-gzip", "deflate"):
        how = "deflate" if encoding == "deflate" else "gzip"
        data = gunzip(raw, max_decoded_bytes)
    elif encoding not in ("", "identity"):
        return BodyProblem(
            415,
            "unsupported_encoding",
            f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding",
        )
    elif compression == "gzip-js" or raw[:2] == GZIP_MAGIC:
        how = "gzip-js" if compression == "gzip-js" else "gzip"
        data = gunzip(raw, max_decoded_bytes)
    if isinstance(data, BodyProblem):
        return data
    if mtype == FORM_TYPE and _looks_like_json(data):
        mtype = "application/json"
    if compression in ("base64", "lz64", "lz-string") or mtype == FORM_TYPE:
        return BodyProblem(
            415,
            "unsupported_encoding",
            "form, base64 and lz-string bodies are not supported; send JSON or gzip",
        )
    if mtype not in JSON_TYPES:
        return BodyProblem(
            415,
            "unsupported_media_type",
            f"Content-Type {mtype!r} is not supported; send "
            "application/json (text/plain is accepted too)",
        )
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return BodyProblem(400, "invalid_json", f"body is not valid JSON: not UTF-8 ({exc})")
    return Decoded(repaired(data), how)
