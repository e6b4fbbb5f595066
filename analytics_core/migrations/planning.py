"""Which migrations a client database still needs: a pure function.

Invariant: a version recorded in `schema_versions` is never applied again; if
its file changed since (checksum differs) or disappeared, the plan is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from analytics_core.migrations.files import MigrationFile
from analytics_core.registry import AppliedVersion


@dataclass(frozen=True)
class Plan:
    pending: tuple[MigrationFile, ...]

    @property
    def up_to_date(self) -> bool:
        return not self.pending


@dataclass(frozen=True)
class Refused:
    version: int
    reason: str


def plan(available: Sequence[MigrationFile], applied: Sequence[AppliedVersion]) -> Plan | Refused:
    by_version = {m.version: m for m in available}
    for a in applied:
        current = by_version.get(a.version)
        if current is None:
            return Refused(
                a.version,
                f"version {a.version} ({a.name}) was applied but its file is gone; "
                "restore the file: applied migrations are never deleted",
            )
        if current.checksum != a.checksum:
            return Refused(
                a.version,
                f"version {a.version} ({a.name}) was applied with checksum "
                f"{a.checksum[:12]}… but the file now has {current.checksum[:12]}…; "
                "applied migrations must not be edited: revert the file and add a new version",
            )
    done = {a.version for a in applied}
    return Plan(
        tuple(m for m in sorted(available, key=lambda m: m.version) if m.version not in done)
    )


def latest_version(applied: Sequence[AppliedVersion]) -> int | None:
    return max((a.version for a in applied), default=None)
