"""One reconciliation of one client: read accounting and observations, call `reconcile`.

`python -m analytics_core.reconciliation --client ID [--json]` runs it from a shell (exit 0:
balanced, 1: problems, 2: could not run); the Dagster asset check calls `reconcile_client`
with its resources' connections.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from analytics_core import registry
from analytics_core.clickhouse import database_exists
from analytics_core.connections import Connections, UnknownTarget
from analytics_core.lifecycle import busy_reason
from analytics_core.reconciliation import accounting, observed
from analytics_core.reconciliation.model import Observations, Report, ScanSummary, Unavailable
from analytics_core.reconciliation.reconcile import reconcile
from analytics_core.reconciliation.window import WINDOW_SECONDS, hour_of
from analytics_core.settings import DEFAULT_TARGET, env_float, env_int, env_str


@dataclass(frozen=True)
class ReconciliationOptions:
    grace_s: float = 300.0
    lookback_hours: float = 48.0
    max_dead_letters: int = 500_000
    groups: tuple[str, ...] | None = None  # None: every consumer group that counted the client

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReconciliationOptions:
        e = os.environ if env is None else env
        groups_raw = env_str(e, "RECONCILIATION_CONSUMER_GROUPS", "")
        groups = tuple(g.strip() for g in groups_raw.split(",") if g.strip()) or None
        return cls(
            grace_s=env_float(e, "RECONCILIATION_GRACE_S", 300.0),
            lookback_hours=env_float(e, "RECONCILIATION_LOOKBACK_HOURS", 48.0, minimum=1.0),
            max_dead_letters=env_int(e, "RECONCILIATION_MAX_DEAD_LETTERS", 500_000, minimum=1),
            groups=groups,
        )


@dataclass(frozen=True)
class Placement:
    """Where a client's rows are: its database on its ClickHouse target."""

    database: str
    target: str


def client_database(conn: registry.Conn, client_id: str) -> Placement | Unavailable:
    row = registry.get_client(conn, client_id)
    if row is None:
        return Unavailable(client_id, f"no client {client_id!r} in the registry", "no_client")
    if not row.ch_database_name:
        return Unavailable(
            client_id, f"client {client_id} has no database (status {row.status})", "no_database"
        )
    return Placement(row.ch_database_name, row.ch_target)


def reconcile_client(
    c: Connections,
    client_id: str,
    opts: ReconciliationOptions,
    *,
    now: datetime | None = None,
) -> Report | Unavailable:
    moment = now or datetime.now(UTC)
    place = client_database(c.registry, client_id)
    if isinstance(place, Unavailable):
        return place
    moving = busy_reason(c.registry, client_id)
    if moving is not None:
        # Rows are on two targets until the move is done: nothing can be judged meanwhile.
        return Unavailable(client_id, moving, "moving")
    database = place.database
    ops = c.ops_database
    horizon = hour_of(moment - timedelta(hours=opts.lookback_hours)) + WINDOW_SECONDS
    since = datetime.fromtimestamp(horizon, UTC)
    rows_since = since - timedelta(seconds=WINDOW_SECONDS)

    # The accounting is on the default target (the ops database); the rows on the client's.
    ch = c.clickhouse
    try:
        rows_ch = c.clickhouse_for(place.target)
    except UnknownTarget as exc:
        return Unavailable(client_id, f"client {client_id}: {exc}")
    if not database_exists(rows_ch, database):
        return Unavailable(
            client_id,
            f"database {database} of client {client_id} is gone from ClickHouse target "
            f"{place.target}",
            "no_database",
        )
    problem = accounting.accounting_problem(ch, ops)
    if problem is not None:
        return Unavailable(client_id, problem)
    groups = opts.groups
    accounted = accounting.read_accounted(ch, ops, client_id, since, groups)
    spans = accounting.read_client_spans(ch, ops, client_id, since, groups)
    used_groups = sorted({s.stream.group for s in spans})
    topics = sorted({a.topic for a in accounted} | {c.kafka.raw_topic})
    islands = accounting.read_islands(ch, ops, since, used_groups)
    dead_ranges = accounting.read_dead_ranges(ch, ops, client_id, since, groups)
    rows = observed.read_row_groups(
        rows_ch,
        database,
        ops,
        client_id,
        rows_since=rows_since,
        ranges_since=since,
        topics=topics,
        groups=used_groups,
        ops=None if place.target == DEFAULT_TARGET else ch,
    )
    letters, scan = observed.scan_dead_letters(
        c.kafka, client_id, topics, since=since, max_messages=opts.max_dead_letters
    )
    parked, parked_note = observed.read_parked(c.registry, client_id, topics, since=since)
    notes = [parked_note] if parked_note else []
    if not accounted and not rows:
        notes.append("nothing to reconcile: no accounting and no rows in the lookback")
    obs = Observations(
        islands=tuple(islands),
        client_spans=tuple(spans),
        rows=tuple(rows),
        dead_ranges=tuple(dead_ranges),
        letters=tuple(observed.merge_sightings(letters, parked)),
        letter_scan=ScanSummary(scan.complete, scan.read, scan.detail),
        notes=tuple(notes),
    )
    return reconcile(
        client_id, database, accounted, obs, now=moment, horizon=horizon, grace_s=opts.grace_s
    )
