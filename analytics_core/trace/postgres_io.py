"""The event's dead-letter reprocessing outcome (PostgreSQL tables of issue 4).

Matched by event id, and by the dead-letter coordinates found on the topic (letters of
whole messages carry no event id). A missing table is reported as a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.errors

from analytics_core.registry import Conn
from analytics_core.trace.model import Coords, FateRecord

# table -> (outcome, time column, extra columns: attempts, detail)
_TABLES: dict[str, tuple[str, str, str, str]] = {
    "replayed_dead_letters": ("replayed", "replayed_at", "attempts", "''"),
    "parked_dead_letters": ("parked", "parked_at", "attempts", "parked_because || ': ' || detail"),
    "deferred_dead_letters": (
        "deferred",
        "deferred_at",
        "attempts",
        "detail || COALESCE(' (resolved: ' || resolution || ')', '')",
    ),
}


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def find_fates(
    conn: Conn, event_id: str, letters: Sequence[Coords]
) -> tuple[list[FateRecord], list[str]]:
    topics = [c.topic for c in letters]
    parts = [c.partition for c in letters]
    offs = [c.offset for c in letters]
    fates: list[FateRecord] = []
    notes: list[str] = []
    for table, (outcome, at_col, attempts_col, detail_expr) in _TABLES.items():
        resolution = "resolution" if table == "deferred_dead_letters" else "NULL"
        # Table and column names are constants of this module.
        sql = (
            f"SELECT dl_topic, dl_partition, dl_offset, reason, {at_col}, {attempts_col},"
            f" {detail_expr}, dagster_run_id, {resolution} FROM {table}"
            " WHERE lower(event_id) = %s OR (dl_topic, dl_partition, dl_offset) IN"
            " (SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[]))"
            f" ORDER BY {at_col}"
        )
        with conn.cursor() as cur:
            try:
                cur.execute(sql, (event_id, topics, parts, offs))
                rows = cur.fetchall()
            except psycopg2.errors.UndefinedTable:
                conn.rollback()
                notes.append(f"table {table} does not exist (reprocessing not installed)")
                continue
        conn.commit()
        for t, p, o, reason, at, attempts, detail, run_id, res in rows:
            label = outcome if not res else f"deferred, then {res}"
            fates.append(
                FateRecord(
                    table=table,
                    outcome=label,
                    dl=Coords(str(t), int(p), int(o)),
                    reason=str(reason),
                    at=_utc(at),
                    attempts=int(attempts) if attempts is not None else None,
                    detail=str(detail or ""),
                    dagster_run_id=run_id,
                )
            )
    fates.sort(key=lambda f: f.at or datetime.min.replace(tzinfo=UTC))
    return fates, notes
