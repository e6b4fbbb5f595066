"""RFC 3339 date-times (section 5.6), exactly: what event contract v1 calls a timestamp.

Stricter than `datetime.fromisoformat`, which also takes ISO 8601 forms RFC 3339 does not
(`20240101T000000Z`, week dates, hour-only times, `+0100`), and exact to the millisecond:
every value is computed in integers, never through a float (`timestamp() * 1000` loses
1 ms on about 1% of instants after 2038).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# "T" and "Z" may be lower case (RFC 3339 5.6). Not a space for "T": the RFC lets
# applications choose that, and JSON Schema's date-time (the contract's schema) does not.
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since 1970-01-01T00:00:00Z of an aware datetime, floored, exactly."""
    return (moment - _EPOCH) // _MS


def rfc3339_ms(text: str) -> int | None:
    """Epoch milliseconds of an RFC 3339 date-time, None when `text` is not one. The
    fraction is truncated to milliseconds; a leap second (`:60`) reads as the start of the
    next second."""
    if _DATE_TIME.fullmatch(text) is None or (text[-1] not in "Zz" and text[-2] > "5"):
        return None  # not the grammar, or offset minutes past 59 (fromisoformat takes them)
    try:
        # Fast path (0.8 us against 3.3): once the shape is RFC 3339's, fromisoformat reads
        # the same value, its fraction truncated to microseconds. It refuses lower-case
        # t/z, a leap second and impossible values; the exact reading below decides those.
        return epoch_ms(datetime.fromisoformat(text))
    except ValueError:
        return _exact_ms(text)


def _exact_ms(text: str) -> int | None:
    m = _DATE_TIME.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    fraction, sign, off_hours, off_minutes = m.group(7, 8, 9, 10)
    if hour > 23 or minute > 59 or second > 60:
        return None
    try:
        moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
    except ValueError:  # no such day (2024-02-30), or year 0000
        return None
    ms = epoch_ms(moment) + (1000 if second == 60 else 0)
    if fraction:
        ms += int(fraction[:3].ljust(3, "0"))
    if sign is not None:
        if int(off_hours) > 23 or int(off_minutes) > 59:
            return None
        offset_ms = (int(off_hours) * 60 + int(off_minutes)) * 60_000
        ms += -offset_ms if sign == "+" else offset_ms
    return ms


def why_not_rfc3339(text: str) -> str:
    """What to fix in a text `rfc3339_ms` refused (for a dead letter's detail)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return f"{text!r} is not an RFC 3339 date-time (like 2026-11-27T10:00:00.000Z)"
    if parsed.tzinfo is None:
        return f"{text!r} has no time zone; add 'Z' or an offset"
    return f"{text!r} is ISO 8601 but not RFC 3339; write it like 2026-11-27T10:00:00.000Z"
