"""Benchmark baseline 2: ClickHouse's Kafka Connect sink in a standalone Connect worker.

The Connect runtime comes from Maven Central. The sink itself is not published there, so
unless CLICKHOUSE_KAFKA_CONNECT_PLUGIN names a release zip/jar (or Central starts serving it)
the test checks that the baseline says so clearly instead of crashing the benchmark.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from analytics_core.clickhouse import http_client
from analytics_core.settings import Settings
from bench.baselines import kafka_connect_sink as sink

pytestmark = pytest.mark.integration

EVENTS = 2000


def test_connect_sink_delivers_every_event_or_says_why_not(stack: Settings, tmp_path: Path) -> None:
    jars = sink.ensure_jars()
    assert any(jars.glob("connect-runtime-4.*.jar")), list(jars.iterdir())
    try:
        sink.ensure_sink_plugin()
        available: str | None = None
    except sink.BaselineUnavailable as exc:
        available = str(exc)

    run_id = uuid.uuid4().hex[:8]
    topic = f"test_connect_{run_id}"
    database, table = f"test_connect_{run_id}", "events"
    sink.create_topic(stack, topic, 6)
    sink.create_table(stack, database, table)
    try:
        sink.produce_events(stack, topic, EVENTS)
        result = sink.run_sink(
            stack,
            topic=topic,
            database=database,
            table=table,
            expected_rows=EVENTS,
            timeout_s=300,
            group_id=f"test-connect-{run_id}",
            log_dir=tmp_path,
        )
        ch = http_client(stack.clickhouse)
        try:
            distinct = int(ch.command(f"SELECT uniqExact(event_id) FROM {database}.{table}"))  # type: ignore[arg-type]
            bad_ts = int(
                ch.command(
                    f"SELECT countIf(toYear(event_timestamp) < 2020) FROM {database}.{table}"
                )
            )  # type: ignore[arg-type]
        finally:
            ch.close()
    finally:
        sink.delete_topic(stack, topic)
        ch = http_client(stack.clickhouse)
        ch.command(f"DROP DATABASE IF EXISTS {database} SYNC")
        ch.close()

    if available is None:
        assert result.error is None, result.error
        assert result.rows == EVENTS
        assert distinct == EVENTS
        assert bad_ts == 0
        assert result.seconds > 0 and result.events_per_s > 0
        assert result.peak_rss_mib > 0
    else:
        # The reason is reported, not raised, and tells the user what to do about it.
        assert result.error == available
        assert result.rows == 0 and distinct == 0
        assert "not on Maven Central" in result.error
        assert sink.PLUGIN_ENV in result.error
