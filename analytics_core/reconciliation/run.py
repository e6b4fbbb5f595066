"""One reconciliation of one client: read accounting and observations, call `reconcile`.

`python -m analytics_core.reconciliation --client ID [--json]` runs it from a shell (exit 0:
balanced, 1: problems, 2: could not run); the Dagster asset check calls `reconcile_client`
with its resources' connections.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client
from confluent_kafka import KafkaException

from analytics_core import registry
from analytics_core.clickhouse import database_exists
from analytics_core.connections import Connections, UnknownTarget
from analytics_core.lifecycle import busy_reason
from analytics_core.reconciliation import accounting, duplicates, observed
from analytics_core.reconciliation.model import (
    CollapsedCopy,
    LetterSighting,
    Observations,
    RangeFinder,
    Report,
    ScanSummary,
    Unavailable,
)
from analytics_core.reconciliation.reconcile import reconcile
from analytics_core.reconciliation.window import ROUTED, WINDOW_SECONDS, hour_of
from analytics_core.settings import DEFAULT_TARGET, env_float, env_int, env_str

# Bound of the Kafka read-back that proves collapsed duplicates (offsets per check).
MAX_COLLAPSE_READ = 200_000


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
    merged = observed.merge_sightings(letters, parked)
    obs = Observations(
        islands=tuple(islands),
        client_spans=tuple(spans),
        rows=tuple(rows),
        dead_ranges=tuple(dead_ranges),
        letters=tuple(merged),
        letter_scan=ScanSummary(scan.complete, scan.read, scan.detail),
        notes=tuple(notes),
    )
    report = reconcile(
        client_id, database, accounted, obs, now=moment, horizon=horizon, grace_s=opts.grace_s
    )
    short = {w.window for w in report.judged_windows if w.missing_rows}
    if not short:
        return report
    # Fewer rows than routed copies: merges may have collapsed producer duplicates. Prove
    # which, from Kafka, and judge again (a copy not proven collapsed stays missing).
    proof = prove_collapsed(
        c, rows_ch, database, client_id, short, since=since, groups=groups, letters=merged
    )
    obs = dataclasses.replace(obs, collapsed=proof.collapsed, notes=obs.notes + tuple(proof.notes))
    return reconcile(
        client_id, database, accounted, obs, now=moment, horizon=horizon, grace_s=opts.grace_s
    )


@dataclass(frozen=True)
class CollapseProof:
    collapsed: tuple[CollapsedCopy, ...]
    notes: tuple[str, ...] = ()


def prove_collapsed(
    c: Connections,
    rows_ch: Client,
    database: str,
    client_id: str,
    windows: Collection[int],
    *,
    since: datetime,
    groups: Sequence[str] | None,
    letters: Collection[LetterSighting],
) -> CollapseProof:
    """The routed copies of `windows` that a merge collapsed into a stored copy of the same
    event (`duplicates`): the ranges that counted them are read back from Kafka (at most
    MAX_COLLAPSE_READ offsets; past that nothing is proven and the shortfall stays missing).
    """
    ranges = accounting.read_counted_ranges(
        c.clickhouse, c.ops_database, client_id, ROUTED, since, groups, windows
    )
    size = sum(r.next_offset - r.first_offset for r in ranges)
    if size > MAX_COLLAPSE_READ:
        return CollapseProof(
            (),
            (
                f"collapsed duplicates not verified: {size} offsets to read back "
                f"(limit {MAX_COLLAPSE_READ})",
            ),
        )
    spans = sorted(
        {(r.stream.topic, r.stream.partition, r.first_offset, r.next_offset) for r in ranges}
    )
    bounds: dict[tuple[str, int], tuple[int, int]] = {}
    for t, p, lo, hi in spans:
        old = bounds.get((t, p), (lo, hi))
        bounds[(t, p)] = (min(old[0], lo), max(old[1], hi))
    stored = observed.read_stored_coordinates(
        rows_ch, database, [(t, p, lo, hi) for (t, p), (lo, hi) in sorted(bounds.items())]
    )
    finder = RangeFinder(ranges)
    copies = []
    for topic in sorted({t for t, _, _, _ in spans}):
        wanted: dict[int, set[int]] = {}
        for t, p, lo, hi in spans:
            if t == topic:
                wanted.setdefault(p, set()).update(range(lo, hi))
        try:
            messages = observed.read_back_messages(c.kafka, topic, wanted)
        except KafkaException as exc:
            return CollapseProof((), (f"collapsed duplicates not verified: {exc}",))
        for msg in messages:
            copies += duplicates.copies_in_message(msg, client_id, finder)
    vacant = duplicates.vacant_copies(copies, stored, {s.key for s in letters})
    keys = observed.read_stored_keys(rows_ch, database, {v.key for v in vacant})
    return CollapseProof(tuple(duplicates.collapsed(vacant, keys)))
