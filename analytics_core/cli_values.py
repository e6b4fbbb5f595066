"""argparse types for the command-line tools: a value out of range is refused by argparse
itself (one line naming the option, exit 2), never a traceback from deeper down."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from analytics_core.naming import client_id_problem

INT32_MAX = 2**31 - 1  # PostgreSQL INTEGER columns


def whole(minimum: int, maximum: int = INT32_MAX) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{value} is not between {minimum} and {maximum}")
        return value

    return parse


def above_zero(maximum: float = math.inf) -> Callable[[str], float]:
    """A finite number above 0 and at most `maximum`."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
        if not math.isfinite(value) or not 0 < value <= maximum:
            limit = "" if maximum == math.inf else f" and at most {maximum:g}"
            raise argparse.ArgumentTypeError(f"{raw!r} is not a positive finite number{limit}")
        return value

    return parse


def client_id(raw: str) -> str:
    problem = client_id_problem(raw)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return raw
