"""Repairs to JSON text before decoding (pure; no I/O): what RFC 8259 lets a reader
accept that our decoder (msgspec) refuses, so that one such detail does not cost a request
or a message all its events.

A leading UTF-8 byte order mark: RFC 8259 says senders must not add one and readers may
ignore it; some Windows tools (PowerShell 5's `Out-File`, .NET's `Encoding.UTF8` preamble)
add it. It is dropped.

Escaped lone UTF-16 surrogates: JavaScript's JSON.stringify writes one (`"\\ud83d"`) for a
string cut in the middle of an emoji, and RFC 8259's grammar allows it, but it names no
character: msgspec and ClickHouse refuse it. Refusing the text would lose every event of
its request or message, so each becomes `\\ufffd` (the replacement character, what a
UTF-8 decoder puts for a broken sequence) and every other byte stays as it is. The
replacement has the same length as what it replaces (6 bytes), so size limits measured
before the repair still hold after it.
"""

from __future__ import annotations

import re

# An escaped backslash (kept, so the JSON text `\\ud800` stays text), an escaped surrogate
# pair (kept), or an escaped surrogate alone (replaced); matched left to right, so the
# backslashes' parity is always right.
_ESCAPES = re.compile(
    rb"\\(\\|u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u[dD][89a-fA-F][0-9a-fA-F]{2})"
)


def _keep_or_replace(m: re.Match[bytes]) -> bytes:
    return b"\\ufffd" if len(m[0]) == 6 else m[0]  # 6 bytes: a surrogate alone


UTF8_BOM = b"\xef\xbb\xbf"


def repaired(data: bytes) -> bytes:
    """`data` without a leading byte order mark and with every escaped lone surrogate
    replaced; `data` itself (no copy) when it needs neither. Never longer than `data`."""
    if data[:3] == UTF8_BOM:
        data = data[3:]
    return without_lone_surrogates(data)


def without_lone_surrogates(data: bytes) -> bytes:
    """`data` with every escaped lone UTF-16 surrogate replaced by `\\ufffd`; `data` itself
    (no copy) when it has none."""
    if b"\\" not in data:  # memchr: most texts have no escape at all
        return data
    out = _ESCAPES.sub(_keep_or_replace, data)
    return data if out == data else out
