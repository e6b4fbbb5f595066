"""The router's dead-letter log lines are thinned per (reason, client) and window."""

from __future__ import annotations

from router.letter_log import LetterLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_reason_and_client_per_window_then_the_count_held_back() -> None:
    clock = Clock()
    log = LetterLog(window_s=60, max_keys=10, clock=clock)
    assert log.admit("invalid_api_key", "acme") == 0
    assert [log.admit("invalid_api_key", "acme") for _ in range(500)] == [None] * 500
    assert log.admit("invalid_api_key", "beta") == 0  # another client: its own line
    assert log.admit("schema_violation", "acme") == 0  # another reason: its own line
    clock.now = 61
    assert log.admit("invalid_api_key", "acme") == 500  # says how many were not logged
    assert log.admit("invalid_api_key", "beta") == 0
    assert log.admit("invalid_api_key", "acme") is None


def test_a_flood_of_random_client_ids_logs_about_one_line_per_reason() -> None:
    clock = Clock()
    log = LetterLog(window_s=60, max_keys=100, clock=clock)
    logged = [log.admit("unknown_client", f"nosuch-{i}") for i in range(20_000)]
    assert sum(1 for held in logged if held is not None) == 101  # 100 keys, then the reason
    clock.now = 60
    # The next window's first line of the reason says what the last one did not log.
    assert log.admit("unknown_client", "nosuch-new") == 20_000 - 101
    assert log.admit("unknown_client", "nosuch-other") == 0
