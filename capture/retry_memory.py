"""Event ids an SDK may send again, with the Kafka fate of their first copy.

Rule: the events of a request answered with anything but a quick 200 (503, Kafka's answer
later than CAPTURE_RETRY_MEMORY_AFTER_MS, a client that may have given up) are remembered
with the future of the Kafka message that carries them, for CAPTURE_RETRY_MEMORY_S. When an
SDK retries, each remembered event is not produced again: if its message was acknowledged
the event counts as acknowledged at once; if it is still on its way the retry waits for the
same message. Only events whose first copy definitely failed are produced again. So a 503
never leads to a second copy in Kafka from this process, even when the first copy was
acknowledged after the 503 was sent.

Bounded: at most `max_events` ids (oldest dropped first) for at most `ttl_s` each. Nothing
is remembered on the fast path (quick 200s), so it costs nothing while Kafka is healthy.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable

from capture.kafka_sink import Delivered, DeliveryOutcome

Fate = asyncio.Future[DeliveryOutcome]


class RetryMemory:
    def __init__(self, ttl_s: float, max_events: int) -> None:
        self._ttl_s = ttl_s
        self._max = max_events
        self._ids: OrderedDict[str, tuple[Fate, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def remember(self, event_ids: Iterable[str], fate: Fate) -> None:
        if self._max <= 0:
            return
        expires = time.monotonic() + self._ttl_s
        for eid in event_ids:
            self._ids[eid] = (fate, expires)
            self._ids.move_to_end(eid)
        while len(self._ids) > self._max:
            self._ids.popitem(last=False)

    def fate(self, event_id: str) -> Fate | None:
        """The first copy's fate when it is acknowledged or still pending; None when the
        event must be produced (never seen, expired, or its first copy failed)."""
        hit = self._ids.get(event_id)
        if hit is None:
            return None
        fut, expires = hit
        if time.monotonic() > expires or (fut.done() and not isinstance(fut.result(), Delivered)):
            del self._ids[event_id]
            return None
        return fut

    def expire(self) -> None:
        now = time.monotonic()
        while self._ids:
            _eid, (_fut, expires) = next(iter(self._ids.items()))
            if expires > now:
                break
            self._ids.popitem(last=False)
