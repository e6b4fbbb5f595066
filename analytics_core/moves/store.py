"""Client moves in PostgreSQL (`client_moves`, postgres/sql/04_client_targets.sql).

Every write commits before the function returns, so a step recorded here is durable before
the next one starts. Step changes are compare-and-set (`WHERE step = <the step we did>`):
two runs of one move never both advance it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from analytics_core.moves.plan import Step
from analytics_core.registry import Conn

_COLUMNS = (
    "id, client_id, database_name, source_target, dest_target, step, requested_by,"
    " dagster_run_id, counts, last_error, attempts, created_at, updated_at, switched_at,"
    " finished_at"
)


@dataclass(frozen=True)
class MoveRow:
    id: int
    client_id: str
    database: str
    source_target: str
    dest_target: str
    step: Step
    requested_by: str
    dagster_run_id: str | None
    counts: dict[str, Any]
    last_error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    switched_at: datetime | None
    finished_at: datetime | None


def _row(r: tuple[Any, ...]) -> MoveRow:
    values = list(r)
    values[5] = Step(values[5])
    values[8] = dict(values[8] or {})
    return MoveRow(*values)


def open_move(conn: Conn, client_id: str) -> MoveRow | None:
    """The client's unfinished move, if any (at most one: a unique index)."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM client_moves WHERE client_id = %s AND finished_at IS NULL",
            (client_id,),
        )
        row = cur.fetchone()
    conn.commit()
    return _row(row) if row else None


def moves_of(conn: Conn, client_id: str) -> list[MoveRow]:
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM client_moves WHERE client_id = %s ORDER BY id", (client_id,)
        )
        rows = cur.fetchall()
    conn.commit()
    return [_row(r) for r in rows]


def start(
    conn: Conn,
    client_id: str,
    database: str,
    source: str,
    dest: str,
    *,
    requested_by: str,
    run_id: str | None,
) -> MoveRow:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO client_moves (client_id, database_name, source_target, dest_target,"
            " requested_by, dagster_run_id) VALUES (%s, %s, %s, %s, %s, %s)"
            f" RETURNING {_COLUMNS}",
            (client_id, database, source, dest, requested_by, run_id),
        )
        row = cur.fetchone()
    conn.commit()
    assert row is not None
    return _row(row)


def begin_attempt(conn: Conn, move_id: int, run_id: str | None) -> None:
    """A run starts working on the move (counted; its run id kept)."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE client_moves SET attempts = attempts + 1, updated_at = now(),"
            " dagster_run_id = COALESCE(%s, dagster_run_id) WHERE id = %s",
            (run_id, move_id),
        )
    conn.commit()


def advance(
    conn: Conn, move_id: int, done: Step, to: Step, counts: dict[str, Any] | None = None
) -> bool:
    """Record that step `to` completed after `done`; False when the move was not at `done`
    (another run advanced it)."""
    finished = ", finished_at = now()" if to in (Step.DONE, Step.ABANDONED) else ""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE client_moves SET step = %s, updated_at = now(), last_error = NULL,"
            " counts = counts || %s::jsonb" + finished + " WHERE id = %s AND step = %s",
            (to.value, json.dumps(counts or {}, default=str), move_id, done.value),
        )
        changed = cur.rowcount == 1
    conn.commit()
    return changed


def switch(conn: Conn, move: MoveRow) -> bool:
    """In one transaction: the client's target becomes the destination and the move is
    `switched`. False (nothing changed) when the move is not at `copied` or the client is no
    longer on the source."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE client_moves SET step = %s, switched_at = now(), updated_at = now(),"
            " last_error = NULL WHERE id = %s AND step = %s",
            (Step.SWITCHED.value, move.id, Step.COPIED.value),
        )
        moved = cur.rowcount == 1
        cur.execute(
            "UPDATE clients SET ch_target = %s, updated_at = now()"
            " WHERE client_id = %s AND ch_target = %s",
            (move.dest_target, move.client_id, move.source_target),
        )
        if not (moved and cur.rowcount == 1):
            conn.rollback()
            return False
    conn.commit()
    return True


def record_error(conn: Conn, move_id: int, error: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE client_moves SET last_error = %s, updated_at = now() WHERE id = %s",
            (error[:2000], move_id),
        )
    conn.commit()
