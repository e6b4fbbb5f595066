"""Run a client move to its end, from wherever it stopped (shared by the Dagster job
`move_client` and `python -m analytics_core.admin move-client`).

The protocol is in the package docstring. Each step's work is idempotent and recorded in
`client_moves` before the next starts, so a run killed at any moment (SIGKILL included) is
finished by running the move again with the same target. The client's lock
(`registry.client_lock`) keeps lifecycle steps and a second move run away meanwhile, and
lifecycle steps refuse a client whose move is unfinished.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from analytics_core import lifecycle, registry
from analytics_core.connections import Connections, UnknownTarget
from analytics_core.migrations import files
from analytics_core.migrations.cluster_ddl import NotClusterSafe
from analytics_core.migrations.files import MigrationFile
from analytics_core.moves import copy, store
from analytics_core.moves.copy import MoveError, Progress, Side
from analytics_core.moves.plan import (
    AlreadyThere,
    OpenMove,
    Refused,
    Resume,
    Step,
    decide,
    next_step,
    switched,
    verification_problems,
)
from analytics_core.naming import InvalidIdentifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MoveOptions:
    # After the switch, routers that missed the invalidation see the new target within their
    # cache TTL; the fence waits this long, then invalidates again, so few batches meet it.
    grace_s: float = 5.0
    fence_timeout_s: float = 120.0  # INSERTs still running on the source after the fence
    chunk_rows: int = 200_000  # events compared (and held in memory) per chunk


@dataclass(frozen=True)
class Moved:
    client_id: str
    database: str
    source: str
    dest: str
    move_id: int | None
    counts: dict[str, Any] = field(default_factory=dict)
    already: bool = False  # the client was on `dest` already: nothing done


@dataclass(frozen=True)
class Abandoned:
    client_id: str
    move_id: int
    dest: str


StepFailed = lifecycle.StepFailed


def move_client(
    c: Connections,
    client_id: str,
    dest: str,
    *,
    run_id: str | None = None,
    actor: str = "system",
    migrations: Sequence[MigrationFile] | None = None,
    options: MoveOptions | None = None,
    progress: Progress | None = None,
) -> Moved | StepFailed:
    """Move the client's database to target `dest`, or finish its unfinished move there.
    `migrations` (default: the shipped files) rebuild the client's schema on `dest`."""
    say = progress or log.info
    return lifecycle.locked(
        c,
        client_id,
        lambda: _move(c, client_id, dest, run_id, actor, migrations, options or MoveOptions(), say),
    )


def _move(
    c: Connections,
    client_id: str,
    dest: str,
    run_id: str | None,
    actor: str,
    migrations: Sequence[MigrationFile] | None,
    options: MoveOptions,
    say: Progress,
) -> Moved | StepFailed:
    conn = c.registry
    row = registry.get_client(conn, client_id)
    move = store.open_move(conn, client_id)
    verdict = decide(
        client_id,
        row.status if row else None,
        row.ch_target if row else None,
        dest,
        list(c.targets),
        OpenMove(move.dest_target, move.step) if move else None,
    )
    if isinstance(verdict, Refused):
        lifecycle.record_refusal(
            conn, client_id, "move", verdict.reason, run_id=run_id, actor=actor
        )
        return StepFailed(client_id, verdict.reason, refused=True)
    assert row is not None
    if isinstance(verdict, AlreadyThere):
        say(f"client {client_id} is on target {dest} already; nothing to move")
        return Moved(client_id, row.ch_database_name or "", dest, dest, None, already=True)
    if isinstance(verdict, Resume):
        assert move is not None
        say(f"resuming move {move.id} of {client_id} to {dest} after step {move.step}")
    else:
        try:
            database = lifecycle.database_of(row)
        except InvalidIdentifier as exc:
            return StepFailed(client_id, f"ch_database_name: {exc}", refused=True)
        move = store.start(
            conn, client_id, database, verdict.source, dest, requested_by=actor, run_id=run_id
        )
        registry.audit(
            conn,
            client_id,
            "move_started",
            {"move_id": move.id, "database": database, "from": verdict.source, "to": dest},
            run_id=run_id,
            actor=actor,
        )
        say(f"move {move.id} of {client_id} started: {verdict.source} -> {dest}")
    store.begin_attempt(conn, move.id, run_id)
    try:
        return _steps(c, move, migrations, options, say, run_id, actor)
    except (ClickHouseError, OSError, MoveError, NotClusterSafe, UnknownTarget) as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:500] if str(exc) else ''}"
        store.record_error(conn, move.id, reason)
        current = store.open_move(conn, client_id)
        step = current.step if current else move.step
        registry.audit(
            conn,
            client_id,
            "move_failed",
            {"move_id": move.id, "after_step": step, "error": reason},
            run_id=run_id,
            actor=actor,
        )
        transient = isinstance(exc, (OperationalError, OSError, MoveError))
        return StepFailed(
            client_id, f"move {move.id} stopped after step {step}: {reason}", transient=transient
        )


def _side(c: Connections, target: str) -> Side:
    return Side(target, c.clickhouse_for(target), c.target(target).cluster)


def _steps(
    c: Connections,
    move: store.MoveRow,
    migrations: Sequence[MigrationFile] | None,
    options: MoveOptions,
    say: Progress,
    run_id: str | None,
    actor: str,
) -> Moved | StepFailed:
    conn, client_id, db = c.registry, move.client_id, move.database
    src, dst = _side(c, move.source_target), _side(c, move.dest_target)
    counts: dict[str, Any] = dict(move.counts)
    step = move.step
    while (nxt := next_step(step)) is not None:
        done: dict[str, Any] = {}
        if nxt is Step.COPIED:
            available = list(migrations) if migrations is not None else files.load()
            copy.prepare_destination(
                src, dst, db, available, registry.applied_versions(conn, client_id)
            )
            done["copied_rows"] = copy.copy_all(src, dst, db, say)
        elif nxt is Step.SWITCHED:
            if not store.switch(conn, move):
                return _lost_race(client_id, move.id, step)
            c.invalidate_cache(client_id)
            registry.audit(
                conn,
                client_id,
                "move_switched",
                {"move_id": move.id, "from": move.source_target, "to": move.dest_target},
                run_id=run_id,
                actor=actor,
            )
            say(f"registry switched: {client_id} is on target {move.dest_target}")
        elif nxt is Step.FENCED:
            _grace(conn, move, options.grace_s)
            c.invalidate_cache(client_id)  # again: closes the read-then-write-back race
            copy.fence(src, db, timeout_s=options.fence_timeout_s, progress=say)
        elif nxt is Step.DELTA_COPIED:
            done["delta_rows"] = copy.copy_delta(src, dst, db, options.chunk_rows, say)
        elif nxt is Step.VERIFIED:
            # The delta again (normally nothing): whatever reached the source since is copied.
            done["late_delta_rows"] = copy.copy_delta(src, dst, db, options.chunk_rows, say)
            events, tables = copy.verify(src, dst, db, options.chunk_rows)
            problems = verification_problems(events, tables)
            if problems:
                raise MoveError("verification failed: " + "; ".join(problems))
            done["verified"] = {
                "events": events.to_dict(),
                "tables": {t.table: [t.source_rows, t.dest_rows] for t in tables},
            }
            say(f"verified: {events.to_dict()}")
        elif nxt is Step.DONE:
            copy.drop_copy(src, db)
            say(f"dropped {db} on target {move.source_target}")
        if nxt is not Step.SWITCHED and not store.advance(conn, move.id, step, nxt, done):
            return _lost_race(client_id, move.id, step)
        counts.update(done)
        step = nxt
    registry.audit(
        conn,
        client_id,
        "moved",
        {
            "move_id": move.id,
            "database": db,
            "from": move.source_target,
            "to": move.dest_target,
            "counts": counts,
        },
        run_id=run_id,
        actor=actor,
    )
    return Moved(client_id, db, move.source_target, move.dest_target, move.id, counts)


def _grace(conn: registry.Conn, move: store.MoveRow, grace_s: float) -> None:
    """Wait until `grace_s` after the switch (a re-run long after it does not wait)."""
    current = store.open_move(conn, move.client_id)
    at = current.switched_at if current is not None else None
    if at is None:
        return
    left = grace_s - (datetime.now(UTC) - at).total_seconds()
    if left > 0:
        time.sleep(left)


def _lost_race(client_id: str, move_id: int, step: Step) -> StepFailed:
    return StepFailed(
        client_id,
        f"move {move_id} is no longer at step {step}: another run advanced it; run it again",
        transient=True,
    )


def abandon_move(
    c: Connections, client_id: str, *, run_id: str | None = None, actor: str = "system"
) -> Abandoned | StepFailed:
    """Give up an unfinished move that has not switched: the destination's copy is dropped,
    the client stays where it is."""
    return lifecycle.locked(c, client_id, lambda: _abandon(c, client_id, run_id, actor))


def _abandon(
    c: Connections, client_id: str, run_id: str | None, actor: str
) -> Abandoned | StepFailed:
    conn = c.registry
    move = store.open_move(conn, client_id)
    if move is None:
        return StepFailed(client_id, f"client {client_id} has no unfinished move", refused=True)
    if switched(move.step):
        return StepFailed(
            client_id,
            f"move {move.id} switched already (step {move.step}): new events are on "
            f"{move.dest_target}; run it again to finish it, then move the client back",
            refused=True,
        )
    try:
        copy.drop_copy(_side(c, move.dest_target), move.database)
    except (ClickHouseError, OSError, UnknownTarget) as exc:
        return StepFailed(client_id, f"destination copy not dropped: {exc}", transient=True)
    if not store.advance(conn, move.id, move.step, Step.ABANDONED):
        return _lost_race(client_id, move.id, move.step)
    registry.audit(
        conn,
        client_id,
        "move_abandoned",
        {"move_id": move.id, "from": move.source_target, "to": move.dest_target},
        run_id=run_id,
        actor=actor,
    )
    return Abandoned(client_id, move.id, move.dest_target)
