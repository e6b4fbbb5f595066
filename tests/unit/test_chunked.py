"""`chunked`: the slices every batched read and write of the project goes by."""

from __future__ import annotations

import pytest

from analytics_core.chunked import chunked


def test_slices_keep_order_and_the_last_may_be_shorter() -> None:
    assert [list(c) for c in chunked(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [list(c) for c in chunked([1, 2], 5)] == [[1, 2]]
    assert list(chunked([], 4)) == []


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(chunked([1], 0))
