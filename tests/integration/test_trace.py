"""Trace on the real stack: an event that was routed, one that was dead-lettered and then
replayed by the reprocessing job and routed, and one that was dead-lettered and parked.

One scenario (module fixture) runs a real router and the real reprocessing
(`analytics_core.dlq.reprocess`, filtered to the scenario's clients, own consumer group),
then each test traces one event through the CLI code, the JSON output and the Dagster job.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance

from analytics_core import lifecycle, pg, registry
from analytics_core.clickhouse import http_client
from analytics_core.connections import open_connections
from analytics_core.dlq.classify import Selection
from analytics_core.dlq.reprocess import ReprocessOptions, reprocess
from analytics_core.event_contract import hash_api_key
from analytics_core.settings import Settings
from analytics_core.trace.__main__ import main as trace_main
from analytics_core.trace.model import TraceReport
from analytics_core.trace.run import TraceOptions, trace_event
from tests.conftest import (
    ClientFixture,
    Kafka,
    RouterThread,
    event,
    fresh_group,
    router_env,
    unique_id,
    wait_for,
)
from tests.integration.test_alerts import definitions

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Scenario:
    settings: Settings
    active: ClientFixture
    late: ClientFixture  # pending when its event arrived, provisioned afterwards
    routed_id: str
    replayed_id: str
    parked_id: str


def _client(settings: Settings, prefix: str, *, provision: bool) -> ClientFixture:
    client_id = unique_id(prefix)
    key = f"key-{client_id}"
    conn = pg.connect(settings.postgres)
    try:
        registry.add_client(conn, client_id, hash_api_key(key))
    finally:
        conn.close()
    database = "client_" + client_id.replace("-", "_")
    if provision:
        with open_connections(settings) as c:
            outcome = lifecycle.provision(c, client_id)
        assert isinstance(outcome, lifecycle.Provisioned), outcome
        database = outcome.database
    return ClientFixture(client_id, key, database)


def _has_row(settings: Settings, database: str, event_id: str) -> bool:
    ch = http_client(settings.clickhouse)
    try:
        found = ch.query(
            f"SELECT count() FROM `{database}`.events_base WHERE event_id = toUUID({{i:String}})",
            parameters={"i": event_id},
        ).result_rows[0][0]
    except Exception:
        return False
    finally:
        ch.close()
    return bool(found)


@pytest.fixture(scope="module")
def scenario(stack: Settings) -> Iterator[Scenario]:
    settings = stack
    kafka = Kafka(settings)
    active = _client(settings, "trc", provision=True)
    late = _client(settings, "trl", provision=False)
    group = fresh_group(settings, "router-trace")
    router = RouterThread(router_env(group)).start()
    try:
        routed = event(active)
        parked = event(active, api_key="not-the-key")
        replayed = event(late)
        since = kafka.end_offsets(settings.kafka.dead_letter_topic)
        kafka.send_events([routed, parked, replayed])
        wait_for(lambda: _has_row(settings, active.database, str(routed["event_id"])), 60)
        letters = kafka.read_dead_letters(
            since,
            lambda dl, _v: dl.client_id in (active.client_id, late.client_id),
            expect=2,
        )
        seen = sorted((dl.reason.value, dl.client_id or "", dl.detail) for dl, _v in letters)
        assert [r for r, _c, _d in seen] == ["client_inactive", "invalid_api_key"], seen
        with open_connections(settings) as c:
            provisioned = lifecycle.provision(c, late.client_id)
        assert isinstance(provisioned, lifecycle.Provisioned), provisioned
        late = ClientFixture(late.client_id, late.api_key, provisioned.database)
        dlq_group = unique_id("dlq-trace")
        for client_id in (active.client_id, late.client_id):
            report = reprocess(
                settings,
                ReprocessOptions(selection=Selection(client_id, None), group_id=dlq_group),
                run_id=f"test-{dlq_group}",
            )
            assert not report.busy, report
        wait_for(
            lambda: _has_row(settings, late.database, str(replayed["event_id"])),
            60,
            what="the replayed event routed",
        )
        yield Scenario(
            settings,
            active,
            late,
            str(routed["event_id"]),
            str(replayed["event_id"]),
            str(parked["event_id"]),
        )
    finally:
        router.stop()


def trace(s: Scenario, event_id: str, client_id: str | None = None) -> TraceReport:
    with open_connections(s.settings) as c:
        report = trace_event(c, event_id, client_id, TraceOptions(max_messages=200_000))
    assert isinstance(report, TraceReport), report
    return report


def test_trace_finds_a_routed_event(scenario: Scenario) -> None:
    report = trace(scenario, scenario.routed_id, scenario.active.client_id)
    (row,) = report.rows
    assert row.database == scenario.active.database and row.table == "events_base"
    assert row.kafka_topic == scenario.settings.kafka.raw_topic
    assert row.attempt == 1 and row.router_instance.startswith("router-trace")
    assert (row.origin_partition, row.origin_offset) == (row.kafka_partition, row.kafka_offset)
    assert row.received_at <= row.ingested_at
    assert report.letters == () and report.fates == ()
    assert report.status == f"stored in {scenario.active.database}"
    copy = next(c for c in report.raw_copies if "routed copy" in c.roles)
    assert copy.available and copy.coords.offset == row.kafka_offset


def test_trace_finds_a_dead_lettered_then_replayed_event(scenario: Scenario) -> None:
    # Without --client: every client database is searched.
    report = trace(scenario, scenario.replayed_id)
    assert scenario.late.database in report.databases_searched
    (letter,) = report.letters
    assert letter.reason == "client_inactive" and letter.attempt == 1
    assert letter.client_id == scenario.late.client_id and letter.matched_by == "dl-event-id"
    # "replayed" (or "deferred, then replayed" when another reprocessing run on the shared
    # stack saw the letter while the client was still pending).
    assert report.fates and all(f.outcome.endswith("replayed") for f in report.fates)
    (row,) = report.rows
    assert row.database == scenario.late.database and row.attempt == 2
    assert letter.origin is not None
    assert (row.origin_partition, row.origin_offset) == (
        letter.origin.partition,
        letter.origin.offset,
    )
    assert (row.kafka_partition, row.kafka_offset) != (row.origin_partition, row.origin_offset)
    replay = next(c for c in report.raw_copies if "routed copy" in c.roles)
    assert replay.replay_attempt == 1
    assert report.status.startswith("dead-lettered 1x (client_inactive), then replayed, then")


def test_trace_finds_a_parked_event_with_json_output(scenario: Scenario) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = trace_main(
            [scenario.parked_id, "--client", scenario.active.client_id, "--since", "2h", "--json"]
        )
    assert code == 0
    doc = json.loads(out.getvalue())
    assert doc["rows"] == []
    (letter,) = doc["dead_letters"]
    assert letter["reason"] == "invalid_api_key"
    (fate,) = doc["reprocessing"]
    assert fate["outcome"] == "parked" and fate["table"] == "parked_dead_letters"
    assert "permanent_reason" in fate["detail"]
    assert doc["status"] == "dead-lettered 1x (invalid_api_key), then parked"
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert trace_main([scenario.parked_id, "--since", "2h"]) == 0
    assert "parked at" in text.getvalue() and "invalid_api_key" in text.getvalue()


def test_trace_cli_errors_and_not_found(scenario: Scenario) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert trace_main(["not-a-uuid"]) == 2
        assert trace_main(["0b7c6f6e-0000-4000-8000-000000000000", "--since", "10m"]) == 1
    assert "is not an event id" in out.getvalue()
    assert "not found anywhere" in out.getvalue()


def test_trace_event_job_logs_and_emits_the_report(scenario: Scenario, tmp_path: Path) -> None:
    job = definitions().resolve_job_def("trace_event")
    with DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance:
        result = job.execute_in_process(
            instance=instance,
            run_config={
                "ops": {
                    "trace_event_op": {
                        "config": {
                            "event_id": scenario.replayed_id,
                            "client_id": scenario.late.client_id,
                            "since_hours": 2,
                        }
                    }
                }
            },
        )
        assert result.success
        (materialized,) = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
        metadata = materialized.step_output_data.metadata
        assert metadata["found"].value is True
        assert metadata["rows"].value == 1 and metadata["dead_letters"].value == 1
        assert "replayed" in str(metadata["status"].value)
        assert "client_inactive" in str(metadata["report"].value)
        bad = job.execute_in_process(
            instance=instance,
            run_config={"ops": {"trace_event_op": {"config": {"event_id": "nope"}}}},
            raise_on_error=False,
        )
        assert not bad.success
