"""The ClickHouse side of a client move: build, copy, fence, compare, drop (I/O).

Rows travel as ClickHouse's Native format, streamed from the source's HTTP answer straight
into the destination's INSERT (memory stays flat whatever the table size), one partition at
a time. Every function is safe to call again after a crash at any point: see each one.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, cast

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.external import ExternalData

from analytics_core import registry
from analytics_core.clickhouse import create_database, drop_database, run_ddl
from analytics_core.events_table import EVENTS_TABLE, EVENTS_VIEW
from analytics_core.migrations import planning
from analytics_core.migrations.apply import apply_plan
from analytics_core.migrations.cluster_ddl import single_server_engine
from analytics_core.migrations.files import MigrationFile
from analytics_core.moves.plan import EventsCheck, TableCount, chunk_buckets, missing_identities
from analytics_core.naming import quote_identifier

# The source's events table once fenced: routers write to `events_base`, which is gone.
FENCED_TABLE = "events_base__moving"
EVENTS_TABLES = (EVENTS_TABLE, FENCED_TABLE)
# Exactly the rows selected are written: no block deduplication (a copied block may equal
# one the table saw), no asynchronous buffering, no refusal for many partitions per block.
COPY_SETTINGS = {
    "insert_deduplicate": 0,
    "async_insert": 0,
    "throw_on_max_partitions_per_insert_block": 0,
}

Progress = Callable[[str], None]


class MoveError(RuntimeError):
    """The move can not go on as things are; the message says what to look at."""


@dataclass(frozen=True)
class Side:
    """One end of a move: a target's client and its cluster ("" for one server)."""

    target: str
    client: Client
    cluster: str


def _ref(database: str, table: str) -> str:
    return f"{quote_identifier(database)}.{quote_identifier(table)}"


def tables(side: Side, database: str) -> list[str]:
    """The database's tables holding data (views left out), by name."""
    rows = side.client.query(
        "SELECT name FROM system.tables WHERE database = {db:String}"
        " AND engine NOT LIKE '%View' ORDER BY name",
        parameters={"db": database},
    ).result_rows
    return [str(r[0]) for r in rows]


def data_columns(side: Side, database: str, table: str) -> list[str]:
    """Columns a copy writes: the stored ones (MATERIALIZED/ALIAS/EPHEMERAL are computed)."""
    rows = side.client.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}"
        " AND default_kind NOT IN ('MATERIALIZED', 'ALIAS', 'EPHEMERAL') ORDER BY position",
        parameters={"db": database, "t": table},
    ).result_rows
    return [str(r[0]) for r in rows]


def _partitions(side: Side, database: str, table: str) -> list[str]:
    rows = side.client.query(
        "SELECT DISTINCT partition_id FROM system.parts WHERE database = {db:String}"
        " AND table = {t:String} AND active ORDER BY partition_id",
        parameters={"db": database, "t": table},
    ).result_rows
    return [str(r[0]) for r in rows]


def _stream(
    src: Side,
    dst: Side,
    select: str,
    into: str,
    columns: Sequence[str],
    *,
    parameters: dict[str, object] | None = None,
    external: ExternalData | None = None,
) -> int:
    """Stream the rows of `select` (on the source) into `into` (on the destination)."""
    stream = src.client.raw_stream(
        select, parameters=parameters, fmt="Native", external_data=external
    )
    assert isinstance(stream, io.IOBase)  # the HTTP client's answer, read as it arrives
    try:
        summary = dst.client.raw_insert(
            into,
            list(columns),
            insert_block=cast(BinaryIO, stream),
            fmt="Native",
            settings=COPY_SETTINGS,
        )
    finally:
        stream.close()
    return int(summary.written_rows)


def prepare_destination(
    src: Side,
    dst: Side,
    database: str,
    migrations: Sequence[MigrationFile],
    applied: Sequence[registry.AppliedVersion],
) -> None:
    """An empty copy of the client's database on the destination: dropped first (it is not
    live before the switch, so a re-run starts over), then the client's schema at the versions
    it has applied (checked against the files, like any migration run), then every other
    table of the source (dlt's) as the source shows it, rendered for the destination."""
    chosen = {a.version for a in applied}
    plan = planning.plan(migrations, applied)
    if isinstance(plan, planning.Refused):
        raise MoveError(f"the client's schema can not be rebuilt: {plan.reason}")
    schema = planning.Plan(
        tuple(m for m in sorted(migrations, key=lambda m: m.version) if m.version in chosen)
    )
    drop_database(dst.client, database, dst.cluster)
    create_database(dst.client, database, dst.cluster)
    apply_plan(dst.client, database, schema, lambda _m: None, cluster=dst.cluster)
    for table in tables(src, database):
        if table in EVENTS_TABLES:
            continue
        ddl = str(src.client.query(f"SHOW CREATE TABLE {_ref(database, table)}").result_rows[0][0])
        if not dst.cluster:
            ddl = single_server_engine(ddl)
        run_ddl(dst.client, ddl, database, dst.cluster)


def copy_all(src: Side, dst: Side, database: str, progress: Progress) -> dict[str, int]:
    """Copy every table of the source into the prepared destination, partition by
    partition; returns rows written per table."""
    written: dict[str, int] = {}
    for table in tables(src, database):
        into = EVENTS_TABLE if table in EVENTS_TABLES else table
        columns = data_columns(src, database, table)
        listed = ", ".join(quote_identifier(c) for c in columns)
        total = 0
        partitions: list[str | None] = list(_partitions(src, database, table)) or [None]
        for partition in partitions:
            where = "" if partition is None else " WHERE _partition_id = {p:String}"
            total += _stream(
                src,
                dst,
                f"SELECT {listed} FROM {_ref(database, table)}{where}",
                _ref(database, into),
                columns,
                parameters=None if partition is None else {"p": partition},
            )
        written[into] = written.get(into, 0) + total
        progress(f"copied {total} row(s) of {database}.{table} to target {dst.target}")
    return written


def fence(src: Side, database: str, *, timeout_s: float, progress: Progress) -> None:
    """Make the source's events table unreachable for routers, then wait until no INSERT
    into the database is running there.

    After this returns nothing can add an event row to the source: routers write to
    `events_base`, which is now `events_base__moving` (an INSERT still resolving the old name
    fails, and the router writes the batch to the client's current target). Idempotent: a
    fenced table is left as it is. If `events_base` exists again beside the fenced table
    (something re-created it), both are sources of the delta copy and the verification.
    """
    present = set(tables(src, database))
    if EVENTS_TABLE in present and FENCED_TABLE not in present:
        run_ddl(
            src.client,
            f"RENAME TABLE {_ref(database, EVENTS_TABLE)} TO {_ref(database, FENCED_TABLE)}",
            database,
            src.cluster,
        )
        progress(f"{database}.{EVENTS_TABLE} on target {src.target} renamed {FENCED_TABLE}")
    elif EVENTS_TABLE in present:
        progress(
            f"{database}.{EVENTS_TABLE} exists again on target {src.target} beside "
            f"{FENCED_TABLE}: both are copied and verified"
        )
    run_ddl(src.client, f"DROP VIEW IF EXISTS {_ref(database, EVENTS_VIEW)}", database, src.cluster)
    processes = (
        f"clusterAllReplicas('{src.cluster}', system.processes)"
        if src.cluster
        else "system.processes"
    )
    deadline = time.monotonic() + timeout_s
    while True:
        running = int(
            src.client.query(
                f"SELECT count() FROM {processes} WHERE query_kind = 'Insert'"
                " AND position(query, {db:String}) > 0",
                parameters={"db": database},
            ).result_rows[0][0]
        )
        if not running:
            return
        if time.monotonic() > deadline:
            raise MoveError(
                f"{running} INSERT(s) into {database} still run on target {src.target} after "
                f"{timeout_s:.0f} s; run the move again once they end"
            )
        time.sleep(0.2)


def _events_sources(src: Side, database: str) -> list[str]:
    present = set(tables(src, database))
    return [t for t in (FENCED_TABLE, EVENTS_TABLE) if t in present]


def _days(side: Side, database: str, tables_: Sequence[str]) -> dict[str, int]:
    """Rows per day (the first key of the table's sort order) over `tables_`."""
    out: dict[str, int] = {}
    for table in tables_:
        rows = side.client.query(
            f"SELECT toString(toDate(event_timestamp)) AS d, count() FROM {_ref(database, table)}"
            " GROUP BY d"
        ).result_rows
        for day, n in rows:
            out[str(day)] = out.get(str(day), 0) + int(n)
    return out


def _identities(
    side: Side, database: str, tables_: Sequence[str], day: str, buckets: int, bucket: int
) -> dict[tuple[str, str], int]:
    """(event name, event id) -> rows, for one day and one hash bucket of event ids."""
    out: dict[tuple[str, str], int] = {}
    for table in tables_:
        rows = side.client.query(
            f"SELECT event_name, toString(event_id), count() FROM {_ref(database, table)}"
            " WHERE toDate(event_timestamp) = {d:Date}"
            " AND cityHash64(event_id) % {n:UInt64} = {k:UInt64} GROUP BY 1, 2",
            parameters={"d": day, "n": buckets, "k": bucket},
        ).result_rows
        for name, event_id, n in rows:
            key = (str(name), str(event_id))
            out[key] = out.get(key, 0) + int(n)
    return out


def _chunks(
    src: Side, database: str, sources: Sequence[str], chunk_rows: int
) -> Iterator[tuple[str, int, int]]:
    """(day, buckets, bucket) covering the source's events, about `chunk_rows` rows each."""
    for day, rows in sorted(_days(src, database, sources).items()):
        buckets = chunk_buckets(rows, chunk_rows)
        for bucket in range(buckets):
            yield day, buckets, bucket


def copy_delta(src: Side, dst: Side, database: str, chunk_rows: int, progress: Progress) -> int:
    """Copy every event of the (fenced) source whose identity the destination lacks; returns
    the rows copied. Exact on a re-run: the difference is computed again each time."""
    sources = _events_sources(src, database)
    columns = data_columns(src, database, sources[0]) if sources else []
    listed = ", ".join(quote_identifier(c) for c in columns)
    copied = 0
    for day, buckets, bucket in _chunks(src, database, sources, chunk_rows):
        have = _identities(src, database, sources, day, buckets, bucket)
        lacking = missing_identities(
            have, _identities(dst, database, [EVENTS_TABLE], day, buckets, bucket)
        )
        if not lacking:
            continue
        keys = "\n".join(f"{name}\t{event_id}" for name, event_id in lacking).encode()
        for table in sources:
            external = ExternalData(
                file_name="missing",
                data=keys,
                fmt="TabSeparated",
                structure=["event_name String", "event_id UUID"],
            )
            copied += _stream(
                src,
                dst,
                f"SELECT {listed} FROM {_ref(database, table)}"
                " WHERE toDate(event_timestamp) = {d:Date}"
                " AND (event_name, event_id) IN (SELECT event_name, event_id FROM missing)",
                _ref(database, EVENTS_TABLE),
                columns,
                parameters={"d": day},
                external=external,
            )
    progress(f"delta: {copied} event row(s) copied to target {dst.target}")
    return copied


def verify(
    src: Side, dst: Side, database: str, chunk_rows: int
) -> tuple[EventsCheck, list[TableCount]]:
    """Compare the source with the destination: events by identity, chunk by chunk; every
    other table by its row count."""
    events = EventsCheck()
    sources = _events_sources(src, database)
    for day, buckets, bucket in _chunks(src, database, sources, chunk_rows):
        events.add_chunk(
            _identities(src, database, sources, day, buckets, bucket),
            _identities(dst, database, [EVENTS_TABLE], day, buckets, bucket),
            day,
        )
    counts = []
    for table in tables(src, database):
        if table in EVENTS_TABLES:
            continue
        q = f"SELECT count() FROM {_ref(database, table)}"
        dest_has = table in set(tables(dst, database))
        counts.append(
            TableCount(
                table,
                int(src.client.query(q).result_rows[0][0]),
                int(dst.client.query(q).result_rows[0][0]) if dest_has else 0,
            )
        )
    return events, counts


def drop_copy(side: Side, database: str) -> None:
    """Drop one side's copy of the database (the source once verified; the destination of an
    abandoned move). Idempotent."""
    drop_database(side.client, database, side.cluster)
