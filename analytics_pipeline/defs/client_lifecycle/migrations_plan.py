"""Which active clients get a migration run this tick (pure; the sensor does the I/O).

Invariants:
- the target is the whole set of migration files: `signature` hashes every (version,
  checksum), so a new file or an edited one makes a new target;
- the run key is `migrate:<client>:<signature>`: one run per client and target. A client
  whose run failed is not requested again for the same target (its failure is reported by
  the failed run and an audit row; re-materialize its partition after fixing the cause);
- a client whose applied history disagrees with the files (a tampered applied migration)
  IS requested once per target, so the refusal is visible as a failed run with the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from analytics_core.migrations.files import MigrationFile


def signature(available: Sequence[MigrationFile]) -> str:
    h = hashlib.sha256()
    for m in sorted(available, key=lambda m: m.version):
        h.update(f"{m.version}:{m.checksum}\n".encode())
    return h.hexdigest()[:16]


def run_key(client_id: str, target: str) -> str:
    return f"migrate:{client_id}:{target}"


def plan_migrations(
    needing: Sequence[str], previous: Mapping[str, str], target: str
) -> tuple[list[str], dict[str, str]]:
    """(clients to request, next cursor state: client -> target already requested).

    `needing`: active clients with pending migrations or a refused plan.
    """
    requests = [c for c in needing if previous.get(c) != target]
    return requests, {c: target for c in needing}
