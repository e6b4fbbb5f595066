"""Consecutive slices of a sequence (pure): the unit of one round trip when many keys are
read or written at once (an MGET, a query with `= ANY(...)`, a script over many buckets)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in order, `size` at a time (the last slice may be shorter; none if empty)."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]
