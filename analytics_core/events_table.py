"""The row layout of `<client database>.events_base`, shared by writers and readers.

Invariant: `EVENT_COLUMNS` lists exactly the columns of
clickhouse/schemas/01_events_base.sql, in order; rows are tuples in that order.
Migrations may add columns with defaults; writers keep inserting these names. Readers use
the `events` view, which always has every column of events_base (`events_view_sql`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from analytics_core.naming import quote_identifier

EVENTS_TABLE = "events_base"
_EPOCH_DAY = date(1970, 1, 1)
_MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True, order=True)
class EventKey:
    """The sort key of events_base (ReplacingMergeTree): rows with equal keys are one event,
    and a merge collapses them to one row."""

    event_id: str  # canonical lower-case UUID text
    event_name: str
    day: date  # toDate(event_timestamp), UTC


def event_key(event_id: str, event_name: str, timestamp_ms: int) -> EventKey:
    """The key of an event (the day computed in integers, as ClickHouse's toDate does)."""
    return EventKey(event_id, event_name, _EPOCH_DAY + timedelta(days=timestamp_ms // _MS_PER_DAY))


def stored_keys_query(database: str, keys: Collection[EventKey]) -> tuple[str, dict[str, Any]]:
    """SQL and parameters selecting which of `keys` have a row in the database's
    events_base. Its conditions follow the sort key, so the primary index keeps it small;
    the caller keeps the rows whose (id, name, day) is one of `keys`."""
    return (
        "SELECT DISTINCT toString(event_id), event_name, toDate(event_timestamp)"
        f" FROM {quote_identifier(database)}.{EVENTS_TABLE}"
        " WHERE toDate(event_timestamp) IN {days:Array(Date)}"
        " AND event_name IN {names:Array(String)}"
        " AND event_id IN {ids:Array(UUID)}",
        {
            "days": sorted({k.day for k in keys}),
            "names": sorted({k.event_name for k in keys}),
            "ids": sorted({k.event_id for k in keys}),
        },
    )


EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "event_name",
    "event_timestamp",
    "user_id",
    "event_properties",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "batch_index",
    "origin_partition",
    "origin_offset",
    "attempt",
    "sent_at",
    "received_at",
    "ingested_at",
    "router_instance",
)

# `events`: the client-facing view of events_base, one row per event (FINAL).
EVENTS_VIEW = "events"


def events_view_sql(database: str, columns: Sequence[str]) -> str:
    """The statement that (re)creates the `events` view with every column of events_base.

    Invariant: the view lists the base table's columns by name. `SELECT *` would not do: a
    view's columns are fixed when it is created, so columns added later by migrations would
    be missing, and `*` leaves out MATERIALIZED and ALIAS columns (page_url) altogether.
    """
    db = quote_identifier(database)
    listed = ", ".join(quote_identifier(c) for c in columns)
    return (
        f"CREATE OR REPLACE VIEW {db}.{EVENTS_VIEW} AS"
        f" SELECT {listed} FROM {db}.{EVENTS_TABLE} FINAL"
    )


def view_is_stale(base_columns: Sequence[str], view_columns: Sequence[str]) -> bool:
    """True when the view does not have exactly the base table's columns, in its order."""
    return list(base_columns) != list(view_columns)
