"""The write key of a request's headers (pure): HTTP Basic (Segment, RudderStack) or Bearer."""

from __future__ import annotations

import base64
import binascii
import functools


# SDKs send the same header on every request: decoded once per distinct header (bounded).
@functools.lru_cache(maxsize=4096)
def header_key(authorization: str) -> str | None:
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if not value:
        return None
    if scheme == "bearer":
        return value
    if scheme != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, _, password = decoded.partition(":")
    # Segment's convention is "<write key>:" (empty password); some clients put it second.
    return user or password or None
