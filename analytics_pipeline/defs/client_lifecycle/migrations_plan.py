"""Which active clients get a migration run this tick (pure; the sensor does the I/O).

Invariants:
- the target is the whole set of migration files: `signature` hashes every (version,
  checksum), so a new file or an edited one makes a new target;
- the run key is `migrate:<client>:<target>`: one run per client and target. A client
  whose run failed is not requested again for the same target (its failure is reported by
  the failed run and an audit row), so a broken file never makes a storm of runs;
- a client whose applied history disagrees with the files (a tampered applied migration)
  IS requested once per target, so the refusal is visible as a failed run with the reason;
- health clears by itself once the cause is fixed: a client whose plan is clean again but
  whose last `client_schema` attempt failed (e.g. the tampered file was reverted) gets one
  run for the target `<signature>:recover`, which succeeds and turns the partition green;
- a client whose `events` view lacks columns of events_base gets one run for the target
  `<signature>:view` (every migration run refreshes the view).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from analytics_core.migrations.files import MigrationFile
from analytics_core.migrations.planning import Plan, Refused

RECOVER = "recover"
VIEW = "view"


def signature(available: Sequence[MigrationFile]) -> str:
    h = hashlib.sha256()
    for m in sorted(available, key=lambda m: m.version):
        h.update(f"{m.version}:{m.checksum}\n".encode())
    return h.hexdigest()[:16]


def run_key(client_id: str, target: str) -> str:
    return f"migrate:{client_id}:{target}"


@dataclass(frozen=True)
class ClientSchemaState:
    """What the sensor read about one active client."""

    client_id: str
    plan: Plan | Refused  # the migration files against its applied history
    view_stale: bool = False  # its `events` view lacks columns of events_base
    last_attempt_failed: bool = False  # its latest client_schema materialization failed


@dataclass(frozen=True)
class Need:
    client_id: str
    target: str
    why: str  # one line for the sensor's log and skip reason


def needs(states: Sequence[ClientSchemaState], files_signature: str) -> list[Need]:
    """The clients that need a migrate_client run, each with its target and why."""
    out: list[Need] = []
    for s in states:
        if isinstance(s.plan, Refused):
            out.append(Need(s.client_id, files_signature, f"refused: {s.plan.reason}"))
        elif not s.plan.up_to_date:
            versions = ", ".join(f"v{m.version:03d}" for m in s.plan.pending)
            out.append(Need(s.client_id, files_signature, f"pending {versions}"))
        elif s.view_stale:
            why = "its events view lacks columns of events_base"
            out.append(Need(s.client_id, f"{files_signature}:{VIEW}", why))
        elif s.last_attempt_failed:
            why = "its last migration run failed and nothing is wrong now: a run clears it"
            out.append(Need(s.client_id, f"{files_signature}:{RECOVER}", why))
    return out


def plan_runs(
    targets: Mapping[str, str], previous: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """(clients to request, next cursor state: client -> target already requested).

    `targets`: client -> the target it needs now (clients that need nothing are absent).
    """
    requests = [c for c, t in targets.items() if previous.get(c) != t]
    return requests, dict(targets)


def plan_migrations(
    needing: Sequence[str], previous: Mapping[str, str], target: str
) -> tuple[list[str], dict[str, str]]:
    """`plan_runs` for clients that all need the same target."""
    return plan_runs({c: target for c in needing}, previous)
