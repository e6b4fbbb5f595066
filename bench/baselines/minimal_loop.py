"""Baseline (1): the ceiling of our own client stack.

A minimal consume -> batch insert loop with the router's batch sizes and the same
libraries (confluent-kafka, clickhouse-connect), but no authentication, no
validation, no per-client routing and no tracing: message values are passed to
ClickHouse as JSONEachRow into one table.
"""

from __future__ import annotations

import argparse
import time

from analytics_core import kafka_clients
from analytics_core.clickhouse import http_client
from analytics_core.settings import Settings

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS {table}
(
    client_id String,
    event_id UUID,
    event_name String,
    timestamp UInt64,
    sent_at UInt64,
    user_id String,
    properties String
)
ENGINE = MergeTree ORDER BY (client_id, event_id)
"""


def create_table(settings: Settings, table: str) -> None:
    ch = http_client(settings.clickhouse)
    try:
        ch.command(TABLE_DDL.format(table=table))
    finally:
        ch.close()


def run(
    settings: Settings,
    topic: str,
    group: str,
    table: str,
    expected: int,
    flush_rows: int,
    flush_s: float,
) -> float:
    consumer = kafka_clients.consumer(settings.kafka, group)
    consumer.subscribe([topic])
    ch = http_client(settings.clickhouse)
    started = time.monotonic()
    buf: list[bytes] = []
    last_flush = time.monotonic()
    done = 0
    while done < expected:
        msgs = consumer.consume(num_messages=2000, timeout=0.1)
        buf.extend(m.value() for m in msgs if m.error() is None and m.value())  # type: ignore[misc]
        if buf and (len(buf) >= flush_rows or time.monotonic() - last_flush >= flush_s):
            ch.raw_insert(
                table,
                None,
                insert_block=b"\n".join(buf),
                fmt="JSONEachRow",
                settings={
                    "input_format_json_read_objects_as_strings": 1,
                    "input_format_skip_unknown_fields": 1,
                },
            )
            consumer.commit(asynchronous=False)
            done += len(buf)
            buf = []
            last_flush = time.monotonic()
    elapsed = time.monotonic() - started
    consumer.close()
    ch.close()
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--table", required=True, help="database.table (created if missing)")
    p.add_argument("--expected", type=int, required=True)
    p.add_argument("--flush-rows", type=int, default=50_000)
    p.add_argument("--flush-ms", type=int, default=1000)
    a = p.parse_args()
    settings = Settings.from_env()
    create_table(settings, a.table)
    secs = run(settings, a.topic, a.group, a.table, a.expected, a.flush_rows, a.flush_ms / 1000)
    print(f"minimal loop: {a.expected} rows in {secs:.2f}s = {a.expected / secs:.0f}/s")


if __name__ == "__main__":
    main()
