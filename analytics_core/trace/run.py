"""Trace one event: ask every source, assemble the report (see the package docstring)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.exceptions import ClickHouseError

from analytics_core import registry
from analytics_core.clients import ClientStatus
from analytics_core.connections import Connections
from analytics_core.kafka_reads import ScanBounds
from analytics_core.trace import clickhouse_io, kafka_io, postgres_io
from analytics_core.trace.model import Coords, RawCopy, RowHit, TraceError, TraceReport

DEFAULT_SINCE = timedelta(days=7)
DEFAULT_MAX_MESSAGES = 500_000
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime | None:
    """'90m', '24h', '7d' (ago) or an ISO 8601 time; None when unreadable."""
    moment = now or datetime.now(UTC)
    m = _DURATION.match(text.strip())
    if m:
        return moment - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TraceOptions:
    since: datetime | None = None  # dead letters produced since (default 7 days ago)
    max_messages: int = DEFAULT_MAX_MESSAGES
    fetch_raw: bool = True


def normalise_event_id(text: str) -> str | None:
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        return None


def _databases(conn: registry.Conn, client_id: str | None) -> dict[str, str | None] | str:
    if client_id is not None:
        row = registry.get_client(conn, client_id)
        if row is None:
            return f"no client {client_id!r} in the registry"
        if not row.ch_database_name:
            return f"client {client_id} has no database (status {row.status})"
        return {row.ch_database_name: client_id}
    rows = registry.list_clients(conn)
    return {
        r.ch_database_name: r.client_id
        for r in rows
        if r.ch_database_name and r.status != ClientStatus.DEPROVISIONED.value
    }


def trace_event(
    c: Connections,
    event_id: str,
    client_id: str | None = None,
    options: TraceOptions | None = None,
) -> TraceReport | TraceError:
    opts = options or TraceOptions()
    normal = normalise_event_id(event_id)
    if normal is None:
        return TraceError(event_id, f"{event_id!r} is not an event id (a UUID)")
    dbs = _databases(c.registry, client_id)
    if isinstance(dbs, str):
        return TraceError(normal, dbs)
    notes: list[str] = []
    unsearched: list[str] = []
    present: set[str] = set()
    rows: list[RowHit] = []
    # Every target is searched: a client's rows are on its own, and during a move on two.
    for target in c.targets:
        try:
            ch = c.clickhouse_for(target)
            here = clickhouse_io.existing_databases(ch, sorted(dbs))
            rows += clickhouse_io.find_rows(ch, {d: dbs[d] for d in here}, normal, target)
        except (ClickHouseError, OSError) as exc:
            notes.append(f"ClickHouse target {target} not searched: {str(exc).splitlines()[0]}")
            unsearched.append(target)
            continue
        present |= set(here)
    missing = sorted(set(dbs) - present)
    if missing:
        notes.append(f"databases not found in ClickHouse: {', '.join(missing[:10])}")

    since = opts.since or datetime.now(UTC) - DEFAULT_SINCE
    letters, scan = kafka_io.find_dead_letters(
        c.kafka, normal, ScanBounds(since, max_messages=opts.max_messages)
    )
    scan_note = f"scanned {scan.read} dead letter(s) produced since {since.isoformat()}"
    if not scan.complete:
        scan_note += f"; INCOMPLETE: {scan.detail}"
    fates, fate_notes = postgres_io.find_fates(c.registry, normal, [x.dl for x in letters])
    notes += fate_notes

    raw: list[RawCopy] = []
    if opts.fetch_raw:
        wanted: dict[Coords, set[str]] = {}
        kafka_io.add_role(wanted, [x.origin for x in letters], "origin")
        kafka_io.add_role(wanted, [x.source for x in letters], "failed copy")
        kafka_io.add_role(
            wanted,
            [Coords(r.kafka_topic, r.origin_partition, r.origin_offset) for r in rows],
            "origin",
        )
        kafka_io.add_role(
            wanted,
            [Coords(r.kafka_topic, r.kafka_partition, r.kafka_offset) for r in rows],
            "routed copy",
        )
        raw = kafka_io.fetch_raw_copies(c.kafka, dict(list(wanted.items())[:20]))
    return TraceReport(
        event_id=normal,
        client_id=client_id,
        databases_searched=tuple(sorted(present)),
        rows=tuple(rows),
        letters=tuple(letters),
        fates=tuple(fates),
        raw_copies=tuple(raw),
        dead_letter_scan=scan_note,
        notes=tuple(notes),
        unsearched_targets=tuple(unsearched),
    )
