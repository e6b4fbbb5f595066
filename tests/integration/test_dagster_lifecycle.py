"""The client lifecycle in Dagster on the real stack: sensors evaluated, their runs executed.

Each test gets a sandbox (tests/dagster_sandbox.py): fresh registry and Dagster storage
databases on the local PostgreSQL, a DagsterInstance loaded from the repository's
dagster.yaml, real ClickHouse and Redis. Client ids are unique (`t3-<uuid8>`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    AssetPartitionStatus,
    DagsterEventType,
    DagsterRun,
    DagsterRunStatus,
    ExecuteInProcessResult,
    RunRequest,
)
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from analytics_core import client_cache, lifecycle, package_data
from analytics_core.clickhouse import database_exists, http_client
from analytics_core.clients import ClientStatus
from analytics_core.settings import Settings
from analytics_pipeline.partitions import CLIENTS_PARTITIONS_NAME, clients_partitions
from devstack import api
from tests.dagster_sandbox import Sandbox, launch, sandbox, tick

pytestmark = pytest.mark.integration

PROVISIONING = "provisioning_sensor"
MIGRATIONS = "migrations_sensor"

# A multi-statement migration: a column, and a table in the same file.
V002_SESSION = """
-- session id of an event; ';' inside a string literal must not split: 'a;b'
ALTER TABLE events_base ADD COLUMN IF NOT EXISTS session_id String DEFAULT '';
CREATE TABLE IF NOT EXISTS daily_counts (day Date, n UInt64)
ENGINE = SummingMergeTree ORDER BY day;
"""
V003_LATER = "ALTER TABLE events_base ADD COLUMN IF NOT EXISTS later_col UInt8 DEFAULT 0;\n"


@pytest.fixture(scope="module", autouse=True)
def stack() -> None:
    api.ensure_up(Settings.from_env())


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path / "dagster_home") as box:
        yield box


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    """A migrations directory holding a copy of the repository's migrations."""
    d = tmp_path / "migrations"
    d.mkdir()
    for f in package_data.sql_files(package_data.clickhouse_migrations()):
        (d / f.name).write_bytes(f.read_bytes())
    return d


def new_id() -> str:
    return f"t3-{uuid.uuid4().hex[:8]}"


def audit(sb: Sandbox, client_id: str) -> list[tuple[str, str | None, dict[str, Any], str]]:
    with sb.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT action, dagster_run_id, detail, actor FROM client_audit_log"
            " WHERE client_id = %s ORDER BY id",
            (client_id,),
        )
        return list(cur.fetchall())


def versions(sb: Sandbox, client_id: str) -> dict[int, tuple[str, str]]:
    """version -> (checksum, dagster run id)."""
    with sb.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT version, checksum, dagster_run_id FROM schema_versions WHERE client_id = %s",
            (client_id,),
        )
        return {v: (c, r) for v, c, r in cur.fetchall()}


def columns(sb: Sandbox, database: str, table: str = "events_base") -> set[str]:
    ch = http_client(sb.settings.clickhouse)
    try:
        rows = ch.query(
            "SELECT name FROM system.columns WHERE database = {d:String} AND table = {t:String}",
            parameters={"d": database, "t": table},
        ).result_rows
    finally:
        ch.close()
    return {r[0] for r in rows}


def db_exists(sb: Sandbox, database: str) -> bool:
    ch = http_client(sb.settings.clickhouse)
    try:
        return database_exists(ch, database)
    finally:
        ch.close()


def run_all(sb: Sandbox, defs: Any, sensor: str, requests: list[RunRequest]) -> dict[str, Any]:
    """partition key -> result of its run."""
    out = {}
    for request in requests:
        result = launch(sb, defs, sensor, request)
        assert result is not None and request.partition_key is not None
        out[request.partition_key] = result
    return out


def failure_message(result: ExecuteInProcessResult) -> str:
    events = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert events, "the run has no failed step"
    info = events[0].step_failure_data.error
    assert info is not None
    return info.message


def materialization(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        if event.asset_key is not None and event.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"no materialization of {asset}")


def provision(sb: Sandbox, defs: Any, *client_ids: str) -> dict[str, Any]:
    """Add pending clients and run the provisioning sensor's requests for them."""
    for client_id in client_ids:
        sb.add_client(client_id, f"key-{client_id}")
    requests = tick(sb, defs, PROVISIONING, None).run_requests
    assert sorted(r.partition_key or "" for r in requests) == sorted(client_ids)
    results = run_all(sb, defs, PROVISIONING, requests)
    assert all(r.success for r in results.values())
    return results


def test_provisioning_sensor_takes_a_pending_client_to_active(sb: Sandbox) -> None:
    defs = sb.definitions()
    client_id = new_id()
    database = "client_" + client_id.replace("-", "_")
    sb.add_client(client_id, "secret")
    # A stale cache entry that provisioning must invalidate.
    r = client_cache.redis_client(sb.settings.redis)
    r.set(client_cache.cache_key(client_id), b'{"missing":true}', ex=60)

    first = tick(sb, defs, PROVISIONING, None)
    assert [req.partition_key for req in first.run_requests] == [client_id]
    request = first.run_requests[0]
    assert request.run_key and request.run_key.startswith(f"provision:{client_id}:")
    assert request.tags["dagster/priority"] == "10"  # first in the run queue
    assert sb.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME) == [client_id]
    # Still pending, its run not finished: not requested again.
    assert tick(sb, defs, PROVISIONING, first.cursor).run_requests == []

    result = launch(sb, defs, PROVISIONING, request)
    assert result is not None and result.success
    run_id = result.run_id

    row = sb.client(client_id)
    assert (row.status, row.ch_database_name) == (ClientStatus.ACTIVE, database)
    assert r.get(client_cache.cache_key(client_id)) is None
    r.close()
    assert {"event_id", "page_url"} <= columns(sb, database)
    assert sorted(versions(sb, client_id)) == [0, 1]
    assert {rid for _, rid in versions(sb, client_id).values()} == {run_id}
    assert [(a, rid) for a, rid, *_ in audit(sb, client_id)] == [
        ("migrated", run_id),
        ("provisioned", run_id),
    ]
    meta = materialization(result, "client_database")
    assert meta["database"] == database and meta["schema_version"] == 1
    assert meta["events_base_rows"] == 0 and "events_base" in meta["tables"]
    # Dagster's standard table metadata of the client's events table.
    assert meta["dagster/table_name"] == f"{database}.events_base"
    assert meta["dagster/row_count"] == 0
    assert {"event_id", "page_url"} <= {c.name for c in meta["dagster/column_schema"].columns}
    assert materialization(result, "client_schema")["schema_version"] == 1

    # Active now: the sensor asks for nothing; re-running provisioning changes nothing.
    assert tick(sb, defs, PROVISIONING, first.cursor).run_requests == []
    again = defs.resolve_job_def("provision_client").execute_in_process(
        instance=sb.instance, partition_key=client_id
    )
    assert again.success
    assert materialization(again, "client_database")["was_already_active"] is True
    assert sb.client(client_id).status == ClientStatus.ACTIVE
    assert {rid for _, rid in versions(sb, client_id).values()} == {run_id}
    assert len(audit(sb, client_id)) == 2


def test_invalid_pending_client_is_marked_failed_not_partitioned(sb: Sandbox) -> None:
    defs = sb.definitions()
    bad = f"T3 {uuid.uuid4().hex[:8]}; DROP DATABASE default"
    good = new_id()
    sb.add_client(bad, "k1")
    sb.add_client(good, "k2")

    result = tick(sb, defs, PROVISIONING, None)

    assert [r.partition_key for r in result.run_requests] == [good]
    assert sb.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME) == [good]
    row = sb.client(bad)
    assert row.status == ClientStatus.FAILED
    assert row.status_detail and "is invalid" in row.status_detail
    [(action, _, detail, _)] = audit(sb, bad)
    assert action == "provision_failed" and "is invalid" in detail["error"]
    # Failed now: later ticks leave it alone.
    assert [r.partition_key for r in tick(sb, defs, PROVISIONING, None).run_requests] == [good]
    assert len(audit(sb, bad)) == 1


def test_a_partition_added_by_hand_is_removed_and_the_tick_says_why(sb: Sandbox) -> None:
    stray = new_id()  # valid, but never registered: as if added from the UI
    sb.instance.add_dynamic_partitions(CLIENTS_PARTITIONS_NAME, [stray])

    result = tick(sb, sb.definitions(), PROVISIONING, None)

    assert result.run_requests == []
    assert sb.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME) == []
    assert result.skip_message == (
        f"0 pending client(s); removed partition(s) {stray}: not a registered client"
    )


def test_failed_provisioning_marks_client_failed_and_fails_the_run(
    sb: Sandbox, migrations_dir: Path
) -> None:
    (migrations_dir / "v002_broken.sql").write_text("ALTER TABLE events_base ADD COLUMN\n")
    defs = sb.definitions(migrations_dir)
    client_id = new_id()
    sb.add_client(client_id, "k")
    [request] = tick(sb, defs, PROVISIONING, None).run_requests

    result = launch(sb, defs, PROVISIONING, request)

    assert result is not None and not result.success
    message = failure_message(result)
    assert f"provisioning of client '{client_id}' failed: ClickHouse:" in message
    row = sb.client(client_id)
    assert row.status == ClientStatus.FAILED and row.status_detail
    assert row.status_detail.startswith("ClickHouse:")
    assert ("provision_failed", result.run_id) in [(a, r) for a, r, *_ in audit(sb, client_id)]

    # The operator fixes the file and re-materializes the partition: the client recovers.
    (migrations_dir / "v002_broken.sql").write_text(V002_SESSION)
    fixed = defs.resolve_job_def("provision_client").execute_in_process(
        instance=sb.instance, partition_key=client_id
    )
    assert fixed.success and sb.client(client_id).status == ClientStatus.ACTIVE
    assert sorted(versions(sb, client_id)) == [0, 1, 2]


def test_new_migration_is_applied_to_every_active_client(sb: Sandbox, migrations_dir: Path) -> None:
    defs = sb.definitions(migrations_dir)
    a, b, broken = new_id(), new_id(), new_id()
    provision(sb, defs, a, b, broken)
    first = tick(sb, defs, MIGRATIONS, None)
    assert first.run_requests == []

    (migrations_dir / "v002_session_id.sql").write_text(V002_SESSION)
    # Someone dropped one client's table: its migration fails, the others' do not.
    ch = http_client(sb.settings.clickhouse)
    ch.command(f"DROP TABLE client_{broken.replace('-', '_')}.events_base SYNC")
    ch.close()
    found = tick(sb, defs, MIGRATIONS, first.cursor)
    assert sorted(r.partition_key or "" for r in found.run_requests) == sorted([a, b, broken])
    assert all(r.run_key and r.run_key.startswith("migrate:") for r in found.run_requests)
    assert tick(sb, defs, MIGRATIONS, found.cursor).run_requests == []

    results = run_all(sb, defs, MIGRATIONS, found.run_requests)

    for client_id in (a, b):
        assert results[client_id].success
        database = "client_" + client_id.replace("-", "_")
        assert "session_id" in columns(sb, database)
        assert columns(sb, database, "daily_counts") == {"day", "n"}
        assert versions(sb, client_id)[2][1] == results[client_id].run_id
        assert ("migrated", results[client_id].run_id) in [
            (act, rid) for act, rid, *_ in audit(sb, client_id)
        ]
        assert materialization(results[client_id], "client_schema")["applied_now"] == [2]
    assert not results[broken].success
    assert "ClickHouse:" in failure_message(results[broken])
    assert 2 not in versions(sb, broken)
    assert ("migration_failed", results[broken].run_id) in [
        (act, rid) for act, rid, *_ in audit(sb, broken)
    ]

    # Same files: nothing is requested again (the failure is reported, not retried forever);
    # running a client's migration again is harmless.
    assert tick(sb, defs, MIGRATIONS, found.cursor).run_requests == []
    again = defs.resolve_job_def("migrate_client").execute_in_process(
        instance=sb.instance, partition_key=a
    )
    assert again.success and materialization(again, "client_schema")["applied_now"] == []
    assert versions(sb, a)[2][1] == results[a].run_id


def test_a_migration_run_interrupted_mid_file_heals_on_the_next_run(
    sb: Sandbox, migrations_dir: Path
) -> None:
    """ClickHouse has no transactional DDL: a run killed after some statements of a file,
    before its version is recorded, applies the whole file again. Statements written
    without IF [NOT] EXISTS (as users write them) must not leave the client stuck."""
    defs = sb.definitions(migrations_dir)
    client_id = new_id()
    database = "client_" + client_id.replace("-", "_")
    provision(sb, defs, client_id)
    before = versions(sb, client_id)
    statements = [
        "ALTER TABLE events_base ADD COLUMN plain UInt8 DEFAULT 7",
        "ALTER TABLE events_base ADD INDEX idx_plain plain TYPE minmax GRANULARITY 1",
        "CREATE TABLE plain_daily (day Date, n UInt64) ENGINE = SummingMergeTree ORDER BY day",
        "ALTER TABLE plain_daily RENAME COLUMN n TO total",
        "ALTER TABLE events_base ADD COLUMN after_the_crash String",
    ]
    (migrations_dir / "v002_plain.sql").write_text(";\n".join(statements) + ";\n")
    # The interrupted run: its first four statements reached ClickHouse, nothing recorded.
    ch = http_client(sb.settings.clickhouse)
    try:
        for statement in statements[:4]:
            ch.command(statement, settings={"database": database})
    finally:
        ch.close()
    found = tick(sb, defs, MIGRATIONS, None)
    assert [r.partition_key for r in found.run_requests] == [client_id]

    result = launch(sb, defs, MIGRATIONS, found.run_requests[0])

    assert result is not None and result.success, failure_message(result) if result else None
    assert materialization(result, "client_schema")["applied_now"] == [2]
    healed = materialization(result, "client_schema")["healed_statements"]
    assert [h.split(":")[0] for h in healed] == [
        f"v002 (plain) statement {n}" for n in (1, 2, 3, 4)
    ]
    assert "DUPLICATE_COLUMN" in healed[0] and "TABLE_ALREADY_EXISTS" in healed[2]
    assert "Cannot find column `n` to rename" in healed[3]
    assert [
        (d["version"], d["statement"])
        for action, run_id, d, _ in audit(sb, client_id)
        if action == "migration_statement_healed" and run_id == result.run_id
    ] == [(2, 1), (2, 2), (2, 3), (2, 4)]
    assert sorted(versions(sb, client_id)) == sorted([*before, 2])
    assert {"plain", "after_the_crash"} <= columns(sb, database)
    assert columns(sb, database, "plain_daily") == {"day", "total"}
    # A statement that fails for another reason still fails the run.
    (migrations_dir / "v003_typo.sql").write_text(
        "ALTER TABLE events_base ADD COLUMN IF NOT EXISTS x UInt8;\n"
        "ALTER TABLE events_base RENAME COLUMN after_the_crash TO plain;\n"
    )
    again = tick(sb, defs, MIGRATIONS, found.cursor)
    failed = launch(sb, defs, MIGRATIONS, again.run_requests[0])
    assert failed is not None and not failed.success
    assert "ClickHouse:" in failure_message(failed) and 3 not in versions(sb, client_id)


def test_tampered_applied_migration_is_refused(sb: Sandbox, migrations_dir: Path) -> None:
    (migrations_dir / "v002_session_id.sql").write_text(V002_SESSION)
    defs = sb.definitions(migrations_dir)
    client_id = new_id()
    database = "client_" + client_id.replace("-", "_")
    provision(sb, defs, client_id)
    before = versions(sb, client_id)

    (migrations_dir / "v002_session_id.sql").write_text(V002_SESSION + "-- edited\n")
    (migrations_dir / "v003_later.sql").write_text(V003_LATER)
    found = tick(sb, defs, MIGRATIONS, None)
    assert [r.partition_key for r in found.run_requests] == [client_id]

    result = launch(sb, defs, MIGRATIONS, found.run_requests[0])

    assert result is not None and not result.success
    message = failure_message(result)
    assert f"migration of client '{client_id}' refused" in message
    assert "version 2 (session_id) was applied with checksum" in message
    assert "must not be edited" in message
    assert versions(sb, client_id) == before
    assert "later_col" not in columns(sb, database)
    [(_, _, detail, _)] = [e for e in audit(sb, client_id) if e[0] == "migration_failed"]
    assert "must not be edited" in detail["error"]
    assert [e[1] for e in audit(sb, client_id) if e[0] == "migration_failed"] == [result.run_id]
    # Requested once per state of the files, not on every tick; the sensor says why it waits.
    waiting = tick(sb, defs, MIGRATIONS, found.cursor)
    assert waiting.run_requests == []
    assert waiting.skip_message and f"{client_id}: refused: version 2 (session_id)" in (
        waiting.skip_message
    )
    assert schema_status(sb, client_id) == AssetPartitionStatus.FAILED

    # The operator reverts the edit: health clears by itself. The sensor requests one run,
    # which finds nothing to apply but v003, and the partition is green again.
    (migrations_dir / "v002_session_id.sql").write_text(V002_SESSION)
    (migrations_dir / "v003_later.sql").unlink()
    recovered = tick(sb, defs, MIGRATIONS, waiting.cursor)
    [request] = recovered.run_requests
    assert request.partition_key == client_id and request.run_key
    assert request.run_key.endswith(":recover")
    rerun = launch(sb, defs, MIGRATIONS, request)
    assert rerun is not None and rerun.success
    assert materialization(rerun, "client_schema")["applied_now"] == []
    assert schema_status(sb, client_id) == AssetPartitionStatus.MATERIALIZED
    assert versions(sb, client_id) == before
    # Green and up to date: nothing more to run.
    done = tick(sb, defs, MIGRATIONS, recovered.cursor)
    assert done.run_requests == [] and "up to date" in (done.skip_message or "")


def schema_status(sb: Sandbox, client_id: str) -> AssetPartitionStatus | None:
    status = sb.instance.get_status_by_partition(
        AssetKey("client_schema"), [client_id], clients_partitions
    )
    return (status or {}).get(client_id)


def test_events_view_has_every_column_of_events_base(sb: Sandbox, migrations_dir: Path) -> None:
    """Regression: the view was `SELECT *` at creation, so columns added later (and every
    MATERIALIZED one, like v001's page_url) were missing from `events`."""
    defs = sb.definitions(migrations_dir)
    client_id = new_id()
    database = "client_" + client_id.replace("-", "_")
    provision(sb, defs, client_id)
    ch = http_client(sb.settings.clickhouse)
    try:
        ch.command(
            f"INSERT INTO {database}.events_base (event_id, event_name, event_properties)"
            " VALUES (generateUUIDv4(), 'page_view', '{\"url\": \"/pricing\"}')"
        )
        assert ch.query(f"SELECT page_url FROM {database}.events").result_rows == [("/pricing",)]
        assert columns(sb, database, "events") == columns(sb, database)

        # A later migration adds a column: the migration run refreshes the view.
        (migrations_dir / "v002_session_id.sql").write_text(V002_SESSION)
        [request] = tick(sb, defs, MIGRATIONS, None).run_requests
        result = launch(sb, defs, MIGRATIONS, request)
        assert result is not None and result.success
        assert ch.query(f"SELECT session_id, page_url FROM {database}.events").result_rows == [
            ("", "/pricing")
        ]
        assert columns(sb, database, "events") == columns(sb, database)

        # A database from before the fix (its view is `SELECT *`): the sensor repairs it.
        old_view = f"AS SELECT * FROM {database}.events_base FINAL"
        ch.command(f"CREATE OR REPLACE VIEW {database}.events {old_view}")
        assert "page_url" not in columns(sb, database, "events")
        [repair] = tick(sb, defs, MIGRATIONS, None).run_requests
        assert repair.run_key and repair.run_key.endswith(":view")
        repaired = launch(sb, defs, MIGRATIONS, repair)
        assert repaired is not None and repaired.success
        assert columns(sb, database, "events") == columns(sb, database)
        assert ch.query(f"SELECT page_url FROM {database}.events").result_rows == [("/pricing",)]
    finally:
        ch.close()


def deprovision(sb: Sandbox, defs: Any, client_id: str, confirm: str) -> ExecuteInProcessResult:
    config = {"client_id": client_id, "confirm": confirm, "requested_by": "pytest"}
    return defs.resolve_job_def("deprovision_client").execute_in_process(
        instance=sb.instance,
        run_config={"ops": {"deprovision": {"config": config}}},
        raise_on_error=False,
    )


def queued_run(sb: Sandbox, job: str, tags: dict[str, str]) -> DagsterRun:
    """A run waiting in the queue, as a UI launch or a sensor leaves it."""
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(
            InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="x")), "__repository__"
        ),
        job,
    )
    run = DagsterRun(
        job_name=job,
        run_id=str(uuid.uuid4()),
        status=DagsterRunStatus.QUEUED,
        remote_job_origin=origin,
        tags=tags,
    )
    return sb.instance.add_run(run)


def test_deprovisioning_refuses_a_wrong_confirmation_then_completes(sb: Sandbox) -> None:
    defs = sb.definitions()
    client_id = new_id()
    database = "client_" + client_id.replace("-", "_")
    provision(sb, defs, client_id)
    ch = http_client(sb.settings.clickhouse, database=database)
    ch.insert(
        "events_base",
        [[uuid.uuid4(), "page_view", "{}"] for _ in range(3)],
        column_names=["event_id", "event_name", "event_properties"],
    )
    ch.close()
    audit_before = audit(sb, client_id)

    refused = deprovision(sb, defs, client_id, confirm=client_id + "x")
    assert not refused.success
    assert "does not match client id" in failure_message(refused)
    assert sb.client(client_id).status == ClientStatus.ACTIVE
    assert db_exists(sb, database)
    # Nothing changed but the audit log, which records the refusal, who asked and the run.
    [(action, run_id, detail, actor)] = audit(sb, client_id)[len(audit_before) :]
    assert (action, run_id, actor) == ("deprovision_refused", refused.run_id, "pytest")
    assert "does not match client id" in detail["reason"]
    assert audit(sb, client_id)[: len(audit_before)] == audit_before
    assert client_id in sb.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME)

    # Runs of the client still in the queue (queued behind the deprovisioning, one run per
    # client at a time) are canceled: they would fail inside Dagster on the removed partition.
    waiting = [
        queued_run(sb, job, {tag: client_id})
        for job, tag in (("batch_load_clients", "dagster/partition"), ("x", "analytics/client_id"))
    ]
    other = queued_run(sb, "reconcile_client", {"dagster/partition": new_id()})
    done = deprovision(sb, defs, client_id, confirm=client_id)
    assert done.success
    for run in waiting:
        assert sb.instance.get_run_by_id(run.run_id).status == DagsterRunStatus.CANCELED
    assert sb.instance.get_run_by_id(other.run_id).status == DagsterRunStatus.QUEUED
    row = sb.client(client_id)
    assert row.status == ClientStatus.DEPROVISIONED
    assert not db_exists(sb, database)
    assert client_id not in sb.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME)
    action, run_id, detail, actor = audit(sb, client_id)[-1]
    assert (action, run_id, actor) == ("deprovisioned", done.run_id, "pytest")
    assert detail == {
        "database": database,
        "target": "default",
        "rows_before": {"events_base": 3},
        "already": False,
    }

    # Idempotent: again is harmless, and the sensor does not bring the partition back.
    again = deprovision(sb, defs, client_id, confirm=client_id)
    assert again.success and sb.client(client_id).status == ClientStatus.DEPROVISIONED
    assert audit(sb, client_id)[-1][2]["already"] is True
    assert tick(sb, defs, PROVISIONING, None).run_requests == []
    assert client_id not in sb.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME)


def test_client_provisioned_outside_dagster_gets_a_partition_and_migrations(
    sb: Sandbox, migrations_dir: Path
) -> None:
    defs = sb.definitions(migrations_dir)
    client_id = new_id()
    sb.add_client(client_id, "k")
    # `python -m analytics_core.admin provision` path: no Dagster run, no partition.
    with sb.connections() as c:
        outcome = lifecycle.provision(c, client_id, migrations_dir=migrations_dir)
    assert isinstance(outcome, lifecycle.Provisioned)
    assert sb.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME) == []

    (migrations_dir / "v002_session_id.sql").write_text(V002_SESSION)
    found = tick(sb, defs, MIGRATIONS, None)

    assert [r.partition_key for r in found.run_requests] == [client_id]
    assert sb.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME) == [client_id]
    result = launch(sb, defs, MIGRATIONS, found.run_requests[0])
    assert result is not None and result.success
    assert sorted(versions(sb, client_id)) == [0, 1, 2]
