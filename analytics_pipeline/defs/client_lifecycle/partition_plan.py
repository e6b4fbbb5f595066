"""Which `clients` partitions a provisioning tick adds and removes, and why (pure).

Invariants:
- the partitions follow the registry: one per client with a valid id whose status is
  pending, active or failed;
- every other partition is removed with a reason a person can act on: not a valid client id,
  not a registered client (e.g. added by hand in the UI), or the client's status;
- a tick that requests no run says in its skip reason what it saw and what it changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from analytics_core.clients import ClientStatus
from analytics_core.naming import client_id_problem

PARTITIONED_STATUSES = frozenset({ClientStatus.PENDING, ClientStatus.ACTIVE, ClientStatus.FAILED})


@dataclass(frozen=True)
class PartitionChanges:
    add: list[str] = field(default_factory=list)
    remove: dict[str, str] = field(default_factory=dict)  # partition key -> why

    def describe_removals(self) -> str:
        return "; ".join(f"{key}: {why}" for key, why in sorted(self.remove.items()))


def removal_reason(key: str, status: str | None) -> str:
    """Why partition `key` goes; `status` is its client's registry status (None: unknown)."""
    problem = client_id_problem(key)
    if problem is not None:
        return f"not a valid client id ({problem})"
    if status is None:
        return "not a registered client"
    return f"the client is {status}"


def plan_partitions(statuses: Mapping[str, str], existing: Iterable[str]) -> PartitionChanges:
    """`statuses`: every registered client's status, by id; `existing`: the partitions now."""
    wanted = {
        client_id
        for client_id, status in statuses.items()
        if status in PARTITIONED_STATUSES and client_id_problem(client_id) is None
    }
    have = set(existing)
    return PartitionChanges(
        add=sorted(wanted - have),
        remove={key: removal_reason(key, statuses.get(key)) for key in sorted(have - wanted)},
    )


SHOWN_PER_GROUP = 10  # client ids named per group in a tick's summary


def _named(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOWN_PER_GROUP])
    more = len(ids) - SHOWN_PER_GROUP
    return shown + (f" and {more} more" if more > 0 else "")


def tick_summary(
    pending: Sequence[str],
    requested: Sequence[str],
    changes: PartitionChanges,
    waiting: Mapping[str, str] | None = None,
) -> str:
    """What a provisioning tick saw and did, for its skip reason and its log. `waiting`:
    why each pending client that was not requested waits (its run is queued or running, or
    its attempts are used up); pending clients are grouped by what happened to them."""
    asked = set(requested)
    groups: dict[str, list[str]] = {}
    for c in pending:
        why = "run requested" if c in asked else (waiting or {}).get(c, "not requested")
        groups.setdefault(why, []).append(c)
    parts = [f"{len(pending)} pending client(s)"]
    parts += [f"{why}: {_named(ids)}" for why, ids in groups.items()]
    if changes.add:
        parts.append(f"added partition(s) {_named(changes.add)}")
    if changes.remove:
        parts.append(f"removed partition(s) {changes.describe_removals()}")
    return "; ".join(parts)[:2000]
