"""PostgreSQL side of the reprocessing: who is active, what is already handled, and the
durable record of each fate (postgres/sql/02_batch_files_and_dead_letters.sql).

All writes of one chunk happen in one transaction (`record_fates`), and every insert is
`ON CONFLICT DO NOTHING` on the dead letter's own coordinates, so repeating a chunk after
a crash changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg2.extras import execute_values

from analytics_core.clients import ClientStatus
from analytics_core.dlq.classify import Selection
from analytics_core.dlq.records import (
    DEFERRED_COLUMNS,
    PARKED_COLUMNS,
    REPLAYED_COLUMNS,
    Coordinates,
    LetterRecord,
    from_stored,
)
from analytics_core.registry import Conn


def client_statuses(conn: Conn, client_ids: Iterable[str]) -> dict[str, ClientStatus]:
    """Status of each client id that is in the registry (missing ids are absent)."""
    ids = sorted(set(client_ids))
    if not ids:
        return {}
    with conn.cursor() as cur:
        cur.execute("SELECT client_id, status FROM clients WHERE client_id = ANY(%s)", (ids,))
        rows = cur.fetchall()
    conn.commit()
    out: dict[str, ClientStatus] = {}
    for client_id, status in rows:
        try:
            out[client_id] = ClientStatus(status)
        except ValueError:
            continue  # an unknown status is treated like a missing client: deferred
    return out


_HANDLED = """
WITH c(p, o) AS (SELECT * FROM unnest(%(parts)s::int[], %(offs)s::bigint[]))
SELECT c.p, c.o FROM c WHERE
  EXISTS (SELECT 1 FROM parked_dead_letters x
          WHERE x.dl_topic = %(topic)s AND x.dl_partition = c.p AND x.dl_offset = c.o)
  OR EXISTS (SELECT 1 FROM deferred_dead_letters x
          WHERE x.dl_topic = %(topic)s AND x.dl_partition = c.p AND x.dl_offset = c.o)
  OR EXISTS (SELECT 1 FROM replayed_dead_letters x
          WHERE x.dl_topic = %(topic)s AND x.dl_partition = c.p AND x.dl_offset = c.o)
"""


def already_handled(conn: Conn, coords: Sequence[Coordinates]) -> set[Coordinates]:
    """The coordinates among `coords` that an earlier run already gave a fate."""
    by_topic: dict[str, list[Coordinates]] = {}
    for c in coords:
        by_topic.setdefault(c.topic, []).append(c)
    found: set[Coordinates] = set()
    with conn.cursor() as cur:
        for topic, cs in by_topic.items():
            cur.execute(
                _HANDLED,
                {
                    "topic": topic,
                    "parts": [c.partition for c in cs],
                    "offs": [c.offset for c in cs],
                },
            )
            found.update(Coordinates(topic, int(p), int(o)) for p, o in cur.fetchall())
    conn.commit()
    return found


@dataclass
class Fates:
    """Rows to write for one chunk (tuples in the *_COLUMNS order)."""

    parked: list[tuple[Any, ...]] = field(default_factory=list)
    deferred: list[tuple[Any, ...]] = field(default_factory=list)
    replayed: list[tuple[Any, ...]] = field(default_factory=list)
    resolved_replayed: list[int] = field(default_factory=list)  # deferred ids now replayed
    resolved_parked: list[int] = field(default_factory=list)  # deferred ids now parked

    def __bool__(self) -> bool:
        return bool(
            self.parked
            or self.deferred
            or self.replayed
            or self.resolved_replayed
            or self.resolved_parked
        )


def _insert(cur: Any, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    # Table and column names are constants of this module, never data.
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES %s"
        " ON CONFLICT (dl_topic, dl_partition, dl_offset) DO NOTHING"
    )
    template = "(" + ", ".join("%s::jsonb" if c == "headers" else "%s" for c in columns) + ")"
    execute_values(cur, sql, rows, template=template, page_size=1000)


def record_fates(conn: Conn, fates: Fates) -> None:
    """Write one chunk's fates in one transaction."""
    try:
        with conn.cursor() as cur:
            _insert(cur, "parked_dead_letters", PARKED_COLUMNS, fates.parked)
            _insert(cur, "deferred_dead_letters", DEFERRED_COLUMNS, fates.deferred)
            _insert(cur, "replayed_dead_letters", REPLAYED_COLUMNS, fates.replayed)
            for ids, resolution in (
                (fates.resolved_replayed, "replayed"),
                (fates.resolved_parked, "parked"),
            ):
                if ids:
                    cur.execute(
                        "UPDATE deferred_dead_letters SET resolved_at = now(), resolution = %s"
                        " WHERE id = ANY(%s) AND resolved_at IS NULL",
                        (resolution, ids),
                    )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def waiting_deferred(
    conn: Conn, topic: str, selection: Selection, *, after_id: int, limit: int
) -> list[LetterRecord]:
    """Unresolved deferred records read from dead-letter `topic`, id > after_id, oldest first."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id, dl_topic, dl_partition, dl_offset, message_key, payload, headers"
            " FROM deferred_dead_letters WHERE resolved_at IS NULL AND dl_topic = %s AND id > %s"
            " AND (%s::text IS NULL OR client_id = %s) AND (%s::text IS NULL OR reason = %s)"
            " ORDER BY id LIMIT %s",
            (
                topic,
                after_id,
                selection.client_id,
                selection.client_id,
                selection.reason.value if selection.reason else None,
                selection.reason.value if selection.reason else None,
                limit,
            ),
        )
        rows = cur.fetchall()
    conn.commit()
    out = []
    for deferred_id, topic, partition, offset, key, payload, headers in rows:
        out.append(
            from_stored(
                Coordinates(topic, int(partition), int(offset)),
                bytes(key) if key is not None else None,
                bytes(payload) if payload is not None else None,
                headers or {},
                int(deferred_id),
            )
        )
    return out
