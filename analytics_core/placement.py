"""Where a new client's database goes: the placement policy (pure, no I/O).

Policy, stated once:
1. a target given explicitly (`admin add-client --target NAME`) is used if it is configured,
   and refused otherwise (the message lists the configured targets);
2. otherwise the configured target holding the fewest clients (every client not
   deprovisioned counts, pending ones included, so a burst of registrations spreads out);
   ties go to the target listed first (`default`, then CLICKHOUSE_TARGETS in order).

A client is placed once, when it is registered. Its database never moves by itself: only a
client move (analytics_core.moves) changes `clients.ch_target`, and a target that
disappears from the settings is an error that names it (`unknown_target_problem`), never a
reason to place the client somewhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Placed:
    target: str
    why: str  # "requested" or "fewest clients (default: 3, ch2: 1)"


@dataclass(frozen=True)
class PlacementRefused:
    reason: str


def unknown_target_problem(target: str, configured: Sequence[str]) -> str | None:
    """Why `target` can not be used here (not configured), or None when it can."""
    if target in configured:
        return None
    return (
        f"ClickHouse target {target!r} is not configured (configured: "
        f"{', '.join(configured)}); add it to CLICKHOUSE_TARGETS with its "
        f"CLICKHOUSE_{target.upper()}_* settings, or use one of those"
    )


def place(
    configured: Sequence[str],
    clients_per_target: Mapping[str, int],
    requested: str | None = None,
) -> Placed | PlacementRefused:
    """The target for a new client. `configured` lists the targets in settings order (the
    default first); `clients_per_target` counts the clients on each (targets absent count 0;
    counts of targets not configured are ignored)."""
    if not configured:
        return PlacementRefused("no ClickHouse target is configured")
    if requested is not None:
        problem = unknown_target_problem(requested, configured)
        return PlacementRefused(problem) if problem else Placed(requested, "requested")
    load = {t: clients_per_target.get(t, 0) for t in configured}
    # min() keeps the first of equal keys: ties go to the target listed first.
    chosen = min(configured, key=lambda t: load[t])
    shown = ", ".join(f"{t}: {n}" for t, n in load.items())
    return Placed(chosen, f"fewest clients ({shown})")
