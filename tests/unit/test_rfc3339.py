"""RFC 3339 timestamps of event contract v1 (analytics_core.rfc3339): which texts are
date-times, and their epoch milliseconds to the millisecond."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics_core.event_contract import MAX_TIMESTAMP_MS
from analytics_core.rfc3339 import _exact_ms, epoch_ms, rfc3339_ms, why_not_rfc3339

MS_2024 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2024-01-01T00:00:00Z", MS_2024),
        ("2024-01-01t00:00:00z", MS_2024),
        ("2024-01-01T00:00:00.5Z", MS_2024 + 500),
        ("2024-01-01T00:00:00.123456789Z", MS_2024 + 123),  # truncated, never rounded up
        ("2024-01-01T00:00:00.999999Z", MS_2024 + 999),
        ("2024-01-01T01:30:00+01:30", MS_2024),
        ("2023-12-31T22:00:00-02:00", MS_2024),
        ("2024-01-01T00:00:00-00:00", MS_2024),
        ("2023-12-31T23:59:60Z", MS_2024),  # a leap second reads as the next second
        ("1970-01-01T00:00:00Z", 0),
        ("2038-06-20T09:05:21.898Z", 2_160_637_521_898),  # a float would give ...897
        ("2299-12-31T23:59:59.999Z", MAX_TIMESTAMP_MS),
    ],
)
def test_rfc3339_date_times_and_their_milliseconds(text: str, ms: int) -> None:
    assert rfc3339_ms(text) == ms


@pytest.mark.parametrize(
    "text",
    [
        "20240101T000000Z",  # ISO 8601 basic format
        "2024-01-01 00:00:00Z",  # a space for "T"
        "2024-W01-1T00:00Z",  # week date
        "2024-01-01T00Z",  # hour only
        "2024-01-01T00:00Z",  # no seconds
        "2024-01-01T00:00:00",  # no offset
        "2024-01-01T00:00:00+0100",  # offset without a colon
        "2024-01-01T00:00:00+01",
        "2024-01-01T00:00:00.Z",  # empty fraction
        "2024-01-01T00:00:00,5Z",  # comma fraction
        "2024-02-30T00:00:00Z",  # no such day
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:60:00Z",
        "2024-01-01T00:00:61Z",
        "2024-01-01T00:00:00+24:00",
        "2024-01-01T00:00:00+01:60",
        "0000-01-01T00:00:00Z",
        "+2024-01-01T00:00:00Z",
        "2024-01-01T00:00:0\u0660Z",  # a Unicode digit
        "2024-01-01",
        " 2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00Z\n",
        "",
    ],
)
def test_texts_that_are_not_rfc3339_date_times_are_refused(text: str) -> None:
    assert rfc3339_ms(text) is None
    assert why_not_rfc3339(text)


def test_refusals_say_what_to_write() -> None:
    assert "no time zone" in why_not_rfc3339("2024-01-01T00:00:00")
    assert "not RFC 3339" in why_not_rfc3339("20240101T000000Z")
    assert "2026-11-27T10:00:00.000Z" in why_not_rfc3339("yesterday")


@given(
    st.integers(min_value=0, max_value=MAX_TIMESTAMP_MS),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
def test_every_millisecond_reads_back_exactly_at_every_offset(ms: int, offset_min: int) -> None:
    zone = timedelta(minutes=offset_min)
    local = datetime(1970, 1, 1) + timedelta(milliseconds=ms) + zone
    sign = "+" if offset_min >= 0 else "-"
    hh, mm = divmod(abs(offset_min), 60)
    text = f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond // 1000:03d}{sign}{hh:02d}:{mm:02d}"
    assert rfc3339_ms(text) == ms
    assert epoch_ms(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)) == ms


two = st.integers(min_value=0, max_value=99).map(lambda n: f"{n:02d}")


@given(
    st.integers(min_value=0, max_value=9999).map(lambda n: f"{n:04d}"),
    st.tuples(two, two, two, two, two),
    st.sampled_from(["T", "t"]),
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=12).map(".".__add__)),
    st.one_of(
        st.sampled_from(["Z", "z"]),
        st.tuples(st.sampled_from("+-"), two, two).map(lambda t: f"{t[0]}{t[1]}:{t[2]}"),
    ),
)
def test_the_fast_path_reads_what_the_exact_reading_reads(
    year: str, parts: tuple[str, ...], t: str, fraction: str, zone: str
) -> None:
    month, day, hour, minute, second = parts
    text = f"{year}-{month}-{day}{t}{hour}:{minute}:{second}{fraction}{zone}"
    assert rfc3339_ms(text) == _exact_ms(text), text
