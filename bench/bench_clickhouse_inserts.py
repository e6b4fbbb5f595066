"""What an INSERT into client tables costs ClickHouse, option by option (issue 14).

The router writes one part per INSERT per client table, so with many clients ClickHouse's
fixed cost per INSERT, not the router, sets the pace. This measures that cost and the
options that might lower it, on the local stack's ClickHouse (its process CPU, read from
/proc; merges are stopped on the scratch tables so they do not blur the figures):

1. row format, 10 000-row INSERTs into one table: JSONCompactEachRow (the router before),
   RowBinary (the router now), and the producer's JSON passed through (JSONEachRow of the
   original messages into `input()`, coordinates spliced in): ClickHouse's CPU per row;
2. the fixed cost: --tables tables x one INSERT of 1, 100 and 1000 rows each;
3. insert settings that keep the guarantees, on the 1000-row INSERTs: max_threads=1,
   optimize_on_insert=0, materialize_skip_indexes_on_insert=0 (and insert_deduplicate=0,
   only to price the deduplication the router needs);
4. async inserts (async_insert=1, wait_for_async_insert=1) and a Buffer table in front of
   each client table: what they would save, and why the router does not use them.

The router's side of an INSERT (its HTTP client) is measured too: clickhouse-connect vs a
bare http.client request.

Usage: .venv/bin/python -m bench.bench_clickhouse_inserts [--tables 200]
       (prints its figures; about 3 minutes)
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable, Mapping

import orjson

from analytics_core.clickhouse import http_client
from analytics_core.events_table import EVENT_COLUMNS
from analytics_core.settings import Settings
from bench.bench_router import drop_clients, load_average, local_pids, make_clients, proc_cpu_s
from router.rows import INSERT_SETTINGS, ROW_FORMAT, encode_batch, encode_row, memo_string, uuid_of
from router.send_events import valid_event

NOW_MS = 1795771200999


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class ClickHouseCpu:
    def __init__(self, settings: Settings) -> None:
        pid = local_pids(settings).get("clickhouse")
        if pid is None:
            raise SystemExit("needs the local stack's ClickHouse (python -m devstack up)")
        self.pid = pid

    def measure(self, work: Callable[[], int]) -> tuple[float, int]:
        """(CPU seconds ClickHouse spent, INSERTs) for `work`, which returns its INSERTs."""
        time.sleep(1.0)  # let earlier work settle
        before = proc_cpu_s(self.pid)
        inserts = work()
        time.sleep(0.3)
        return proc_cpu_s(self.pid) - before, inserts


def json_compact_row(e: dict[str, object], offset: int) -> bytes:
    """The router's row before RowBinary: JSONCompactEachRow, properties as text."""
    return orjson.dumps(
        (
            e["event_id"],
            e["event_name"],
            int(e["timestamp"]) / 1000,  # type: ignore[call-overload]
            e["user_id"],
            orjson.Fragment(orjson.dumps(e["properties"])),
            "raw",
            offset % 6,
            offset,
            0,
            offset % 6,
            offset,
            1,
            int(e["sent_at"]) / 1000,  # type: ignore[call-overload]
            NOW_MS / 1000,
        )
    )[:-1]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tables", type=int, default=200, help="client tables for the fixed cost")
    p.add_argument("--rows", type=int, default=100_000, help="rows for the format comparison")
    args = p.parse_args()
    if args.tables < 1 or args.rows < 10_000:
        p.error("--tables must be >= 1 and --rows >= 10000")
    settings = Settings.from_env()
    cpu = ClickHouseCpu(settings)
    run = uuid.uuid4().hex[:6]
    log(f"provisioning one client for the table's schema ({load_average()})")
    [(cid, db)] = make_clients(settings, f"benchins{run}", 1)
    ch = http_client(settings.clickhouse, timeout_s=300)
    scratch = f"bench_inserts_{run}"
    ddl = str(ch.command(f"SHOW CREATE TABLE `{db}`.events_base")).replace("\\n", "\n")
    ddl = ddl.replace("\\'", "'")

    def table(name: str, engine_ddl: str = "") -> str:
        ch.command(f"CREATE DATABASE IF NOT EXISTS `{name}`")
        ch.command(ddl.replace(f"{db}.events_base", f"`{name}`.events_base"))
        if engine_ddl:
            ch.command(engine_ddl.format(db=name))
        ch.command(f"SYSTEM STOP MERGES `{name}`.events_base")
        return name

    lines: list[str] = []

    def report(label: str, seconds: float, inserts: int, rows: int) -> None:
        line = (
            f"{label:<58} {seconds * 1e6 / rows:7.2f} us/row  {seconds * 1e3 / inserts:7.2f}"
            f" ms/INSERT  ({inserts} INSERTs of {rows // inserts} rows)"
        )
        lines.append(line)
        log(line)

    events = [valid_event(f"c{i % 10}", "k", i, pad=190) for i in range(args.rows)]
    binary = [
        encode_row(
            uuid_of(str(e["event_id"])),
            memo_string(str(e["event_name"])),
            int(e["timestamp"]),  # type: ignore[call-overload]
            str(e["user_id"]),
            orjson.dumps(e["properties"]),
            memo_string("raw"),
            i % 6,
            i,
            0,
            None,
            1,
            int(e["sent_at"]),  # type: ignore[call-overload]
            NOW_MS,
        )
        for i, e in enumerate(events)
    ]
    compact = [json_compact_row(e, i) for i, e in enumerate(events)]
    originals = [orjson.dumps(e) for e in events]
    batch = 10_000
    try:
        one = table(f"{scratch}_one")

        def insert_rowbinary(target: str, rows: list[bytes], extra: Mapping[str, object]) -> None:
            ch.raw_insert(
                f"`{target}`.events_base",
                EVENT_COLUMNS,
                insert_block=encode_batch(rows, NOW_MS, "bench"),
                fmt=ROW_FORMAT,
                settings={
                    **INSERT_SETTINGS,
                    "insert_deduplication_token": uuid.uuid4().hex,
                    **extra,
                },
            )

        def rowbinary(rows: list[bytes], extra: dict[str, object] | None = None) -> int:
            for k in range(0, len(rows), batch):
                insert_rowbinary(one, rows[k : k + batch], extra or {})
            return -(-len(rows) // batch)

        def json_compact() -> int:
            tail = b"," + orjson.dumps(NOW_MS / 1000) + b',"bench"]'
            for k in range(0, len(compact), batch):
                ch.raw_insert(
                    f"`{one}`.events_base",
                    EVENT_COLUMNS,
                    insert_block=(tail + b"\n").join(compact[k : k + batch]) + tail,
                    fmt="JSONCompactEachRow",
                    settings={
                        **INSERT_SETTINGS,
                        "input_format_json_read_objects_as_strings": 1,
                        "insert_deduplication_token": uuid.uuid4().hex,
                    },
                )
            return -(-len(compact) // batch)

        def passthrough() -> int:
            # The producer's bytes, coordinates spliced in; the server maps and converts.
            columns = ", ".join(EVENT_COLUMNS)
            sql = (
                f"INSERT INTO `{one}`.events_base ({columns}) SELECT toUUID(event_id),"
                " event_name, fromUnixTimestamp64Milli(timestamp, 'UTC'), user_id, properties,"
                " 'raw', p, o, 0, p, o, 1, fromUnixTimestamp64Milli(sent_at, 'UTC'),"
                f" fromUnixTimestamp64Milli({NOW_MS}, 'UTC'), fromUnixTimestamp64Milli({NOW_MS},"
                " 'UTC'), 'bench' FROM input('event_id String, event_name String, timestamp"
                " Int64, user_id String, properties String, sent_at Int64, p UInt32, o UInt64')"
                " FORMAT JSONEachRow"
            )
            for k in range(0, len(originals), batch):
                body = b"\n".join(
                    m[:-1] + b',"p":%d,"o":%d}' % (i % 6, i)
                    for i, m in enumerate(originals[k : k + batch], start=k)
                )
                ch.command(
                    sql,
                    data=body,
                    settings={
                        **INSERT_SETTINGS,
                        "input_format_json_read_objects_as_strings": 1,
                        "input_format_skip_unknown_fields": 1,
                        "insert_deduplication_token": uuid.uuid4().hex,
                    },
                )
            return -(-len(originals) // batch)

        log(f"1. row format, {batch}-row INSERTs into one table")
        for _ in range(2):  # twice: the machine is shared, the spread shows the noise
            report("JSONCompactEachRow (the router before)", *cpu.measure(json_compact), args.rows)
            report(
                "RowBinaryWithNamesAndTypes (the router now)",
                *cpu.measure(lambda: rowbinary(binary)),
                args.rows,
            )
            report("JSONEachRow pass-through into input()", *cpu.measure(passthrough), args.rows)

        log(f"2. the fixed cost: {args.tables} tables, one INSERT each")
        many = [table(f"{scratch}_t{i}") for i in range(args.tables)]

        def fan_out(per: int, extra: Mapping[str, object] | None = None) -> Callable[[], int]:
            def work() -> int:
                for i, target in enumerate(many):
                    insert_rowbinary(target, binary[i * per : (i + 1) * per], extra or {})
                return len(many)

            return work

        for per in (1, 100, 1000):
            for _ in range(2):
                report(
                    f"{per} rows per INSERT, default settings",
                    *cpu.measure(fan_out(per)),
                    per * len(many),
                )

        log("3. insert settings, 1000-row INSERTs")
        for label, extra in (
            ("max_threads=1", {"max_threads": 1}),
            ("optimize_on_insert=0", {"optimize_on_insert": 0}),
            ("materialize_skip_indexes_on_insert=0", {"materialize_skip_indexes_on_insert": 0}),
            (
                "insert_deduplicate=0 (NOT usable: retries would duplicate)",
                {"insert_deduplicate": 0},
            ),
        ):
            for _ in range(2):
                report(label, *cpu.measure(fan_out(1000, extra)), 1000 * len(many))

        log("4. async inserts and Buffer tables")
        report(
            "async_insert=1, wait_for_async_insert=1",
            *cpu.measure(fan_out(100, {"async_insert": 1, "wait_for_async_insert": 1})),
            100 * len(many),
        )
        buffered = [
            table(
                f"{scratch}_b{i}",
                "CREATE TABLE `{db}`.events_buffer AS `{db}`.events_base ENGINE = Buffer("
                "'{db}', 'events_base', 1, 10, 60, 10000, 1000000, 10000000, 100000000)",
            )
            for i in range(args.tables)
        ]

        def into_buffers() -> int:
            for i, target in enumerate(buffered):
                ch.raw_insert(
                    f"`{target}`.events_buffer",
                    EVENT_COLUMNS,
                    insert_block=encode_batch(binary[i * 100 : (i + 1) * 100], NOW_MS, "bench"),
                    fmt=ROW_FORMAT,
                    settings=INSERT_SETTINGS,
                )
            return len(buffered)

        report(
            "Buffer table per client (100 rows, before its flush)",
            *cpu.measure(into_buffers),
            100 * len(buffered),
        )

        log("5. the router's side: HTTP client CPU per INSERT (1-row INSERTs)")
        lines.append(client_side(settings, many[0], binary[0]))
        log(lines[-1])
    finally:
        for name in ch.query(
            "SELECT name FROM system.databases WHERE startsWith(name, {p:String})",
            parameters={"p": scratch},
        ).result_rows:
            ch.command(f"DROP DATABASE IF EXISTS `{name[0]}` SYNC")
        ch.close()
        drop_clients(settings, [(cid, db)])
    print(f"\n== ClickHouse CPU per INSERT option ({load_average()}) ==")
    for line in lines:
        print(line)
    print(
        "async inserts: the same part per table per flush, and no deduplication token on a"
        " non-replicated table (a retried batch would be stored twice).\n"
        "Buffer tables: cheap INSERTs, but rows sit in server memory until flushed: a"
        " ClickHouse crash loses them after the router committed their offsets."
    )


def client_side(settings: Settings, database: str, row: bytes) -> str:
    import http.client
    import urllib.parse

    ch = http_client(settings.clickhouse)
    body = encode_batch([row], NOW_MS, "bench")
    n = 300
    started = time.process_time()
    for _ in range(n):
        ch.raw_insert(
            f"`{database}`.events_base",
            EVENT_COLUMNS,
            insert_block=body,
            fmt=ROW_FORMAT,
            settings={**INSERT_SETTINGS, "insert_deduplication_token": uuid.uuid4().hex},
        )
    connect = (time.process_time() - started) / n
    conn = http.client.HTTPConnection(settings.clickhouse.host, settings.clickhouse.http_port)
    headers = {"X-ClickHouse-User": settings.clickhouse.user}
    if settings.clickhouse.password:
        headers["X-ClickHouse-Key"] = settings.clickhouse.password
    started = time.process_time()
    for _ in range(n):
        query = urllib.parse.urlencode(
            {
                "query": f"INSERT INTO `{database}`.events_base FORMAT {ROW_FORMAT}",
                "insert_deduplication_token": uuid.uuid4().hex,
                **{k: str(v) for k, v in INSERT_SETTINGS.items()},
            }
        )
        conn.request("POST", "/?" + query, body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise SystemExit(f"bare INSERT failed: {answer.status}")
    bare = (time.process_time() - started) / n
    ch.close()
    conn.close()
    return (
        f"{'router-side CPU per INSERT: clickhouse-connect':<58} {connect * 1e3:7.2f} ms"
        f"   bare http.client {bare * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
