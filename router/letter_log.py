"""How often the router logs a dead letter (pure): once per (reason, client) per window.

A flood of bad messages (a misconfigured producer, a hostile one) would otherwise write a
log line per message, thousands a second. Invariants:
- the first letter of a (reason, client) in a window is logged; the others of the window
  are counted, and the key's first line of the next window says how many were held back
  (with those held back under its reason alone, below);
- at most `max_keys` keys per window: past that, letters are keyed by reason alone, so a
  flood of random client ids logs about one line per reason per window;
- only the log is thinned: every letter is still counted in
  router_events_dead_lettered_total{reason} and kept whole in the dead-letter topic.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Key = tuple[str, str | None]


class LetterLog:
    def __init__(
        self,
        window_s: float = 60.0,
        max_keys: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._started = clock()
        self._held: dict[Key, int] = {}  # this window: key -> letters held back
        self._previous: dict[Key, int] = {}  # the last window's, not yet reported

    def admit(self, reason: str, client_id: str | None) -> int | None:
        """None: do not log this letter; else log it, with this many of its key's letters
        held back before it."""
        now = self._clock()
        if now - self._started >= self.window_s:
            self._previous = {k: n for k, n in self._held.items() if n}
            self._held = {}
            self._started = now
        key: Key = (reason, client_id)
        if key not in self._held and len(self._held) >= self.max_keys:
            key = (reason, None)
        held = self._held.get(key)
        if held is not None:
            self._held[key] = held + 1
            return None
        self._held[key] = 0
        held_back = self._previous.pop(key, 0)
        if key[1] is not None:  # and what its reason held back past the key limit
            held_back += self._previous.pop((reason, None), 0)
        return held_back
