"""One writer lane per ClickHouse target: its writer, its write in flight, its outage.

Invariants:
- a lane has at most one write in flight; batches of a target whose lane is busy or in an
  outage stay in their buffers (or parked), so a target that is down or slow delays only
  the clients placed on it, and the other lanes keep writing;
- an outage of one target backs off that lane alone (its batches are parked until
  `outage_until`); memory back-pressure (router.backpressure) still counts every lane's
  rows, so a long outage ends in a pause of consumption, never in unbounded memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analytics_core.settings import ClickHouseSettings
from router.backoff import Backoff
from router.writer import InFlightWrite, Writer


@dataclass
class Lane:
    target: str
    writer: Writer
    backoff: Backoff
    inflight: InFlightWrite | None = None
    outage_until: float = 0.0  # monotonic time before which the target is not tried
    ok: bool = True  # its last write reached the target

    def blocked(self, now: float) -> bool:
        """No batch can be handed to this lane now."""
        return self.inflight is not None or now < self.outage_until

    def done(self) -> bool:
        """Its write in flight has finished (its outcomes are ready to apply)."""
        return self.inflight is not None and self.inflight.future.done()


def open_lanes(
    targets: Mapping[str, ClickHouseSettings],
    instance: str,
    topic: str,
    concurrency: int,
    backoff_s: float,
    backoff_max_s: float,
) -> dict[str, Lane]:
    """A lane for every configured target (`Settings.clickhouse_targets()`)."""
    return {
        name: Lane(
            name, Writer(settings, instance, topic, concurrency), Backoff(backoff_s, backoff_max_s)
        )
        for name, settings in targets.items()
    }
