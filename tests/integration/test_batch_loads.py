"""Batch loads on the real stack: dlt assets (through Dagster, in process) loading a client's
landing zone into its own ClickHouse database; incremental, idempotent, per client."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetsDefinition, DagsterInstance, materialize

from analytics_core import lifecycle, package_data, pg
from analytics_core.batch.pipeline import pipelines_dir
from analytics_core.batch.seed_sample import seed
from analytics_core.clickhouse import http_client
from analytics_core.connections import open_connections
from analytics_core.settings import Settings
from analytics_pipeline.defs.batch_loads.assets import build_batch_assets
from analytics_pipeline.defs.batch_loads.definitions import RESOURCES as BATCH_RESOURCES
from analytics_pipeline.partitions import CLIENTS_PARTITIONS_NAME
from analytics_pipeline.resources import default_resources

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "batch"
SAMPLE_USERS, SAMPLE_USER_ROWS, SAMPLE_PAGE_VIEWS = 7, 8, 42  # distinct users, user rows, views


@pytest.fixture(scope="module")
def instance() -> DagsterInstance:
    return DagsterInstance.ephemeral()


@functools.cache
def batch_assets() -> list[AssetsDefinition]:
    """The dlt assets, built as the code location builds them (once per test process)."""
    return [build_batch_assets(pipelines_dir(Settings.from_env()))]


@dataclass
class Loaded:
    success: bool
    metadata: dict[str, dict[str, Any]]  # table -> metadata values
    logs: list[str]


def load(instance: DagsterInstance, client_id: str) -> Loaded:
    """Materialize both batch assets for one client partition, like the UI does."""
    if not instance.has_dynamic_partition(CLIENTS_PARTITIONS_NAME, client_id):
        instance.add_dynamic_partitions(CLIENTS_PARTITIONS_NAME, [client_id])
    result = materialize(
        batch_assets(),
        partition_key=client_id,
        instance=instance,
        resources={**default_resources(), **BATCH_RESOURCES},
        raise_on_error=False,
    )
    metadata = {}
    for m in result.asset_materializations_for_node("batch_loads"):
        metadata[m.asset_key.path[-1]] = {k: v.value for k, v in m.metadata.items()}
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    return Loaded(result.success, metadata, logs)


@pytest.fixture
def batch_client(
    stack: Settings, make_client: Callable[..., Any], tmp_path: Path
) -> Callable[..., tuple[Any, Path]]:
    """An active client whose batch source is a fresh landing directory with the samples."""

    def make(active: bool = True, samples: bool = True) -> tuple[Any, Path]:
        client = make_client("t4", active=active)
        landing = tmp_path / client.client_id
        outcome = seed(stack, client.client_id, str(landing))
        assert outcome.__class__.__name__ == "Seeded", outcome
        if not samples:
            shutil.rmtree(landing)
            landing.mkdir()
        return client, landing

    return make


def ch(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    client = http_client(settings.clickhouse)
    try:
        return [tuple(r) for r in client.query(sql).result_rows]
    finally:
        client.close()


def table_counts(settings: Settings, database: str, table: str, key: str) -> tuple[int, int]:
    """(rows, distinct keys): plain count(), so a duplicate would show."""
    [(rows, keys)] = ch(settings, f"SELECT count(), uniqExact({key}) FROM `{database}`.`{table}`")
    return int(rows), int(keys)


def add_file(landing: Path, table: str, fixture: str, name: str | None = None) -> None:
    target = landing / table / (name or fixture)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / fixture, target)


def test_landing_files_load_then_a_second_run_loads_nothing_new(
    stack: Settings, instance: DagsterInstance, batch_client: Any
) -> None:
    client, _landing = batch_client()
    first = load(instance, client.client_id)
    assert first.success
    users, views = first.metadata["users"], first.metadata["page_views"]
    assert users["rows_loaded"] == SAMPLE_USER_ROWS and views["rows_loaded"] == SAMPLE_PAGE_VIEWS
    assert sorted(views["files_consumed"]) == [
        "page_views/page_views_2024-05-01.jsonl",
        "page_views/page_views_2024-05-02.csv",
        "page_views/page_views_2024-05-03.parquet",
    ]
    assert users["load_id"] and users["load_id"] == views["load_id"]
    assert "jobs" not in users  # dlt's load-package paths: internal, never shown
    assert f"client {client.client_id}: page_views: 42 row(s) from 3 new file(s)" in " ".join(
        first.logs
    )
    assert users["database"] == client.database and users["files_rejected"] == []
    assert table_counts(stack, client.database, "users", "user_id") == (7, 7)
    assert table_counts(stack, client.database, "page_views", "page_view_id") == (42, 42)
    # The later file wins for a key present in two files (u-003 upgraded in the CSV).
    assert ch(stack, f"SELECT plan FROM `{client.database}`.users WHERE user_id = 'u-003'") == [
        ("pro",)
    ]

    second = load(instance, client.client_id)
    assert second.success
    assert second.metadata["users"]["rows_loaded"] == 0
    assert second.metadata["page_views"]["rows_loaded"] == 0
    assert second.metadata["page_views"]["files_unchanged"] == 3
    assert second.metadata["users"]["load_id"] == "none: nothing new loaded"
    # Its log says what it did, table by table, also when that is nothing.
    nothing = "page_views: 0 row(s) from 0 new file(s), 3 unchanged, 0 rejected; users: 0 row(s)"
    assert f"client {client.client_id}: {nothing}" in " ".join(second.logs)
    # Loading nothing new still shows the tables' sizes (Dagster's standard entries), ours
    # first; dlt's empty entries are not shown.
    for table, total in (("users", 7), ("page_views", 42)):
        meta = second.metadata[table]
        assert meta["dagster/row_count"] == total
        assert meta["dagster/table_name"] == f"{client.database}.{table}"
        assert "_source_file" in {c.name for c in meta["dagster/column_schema"].columns}
        assert list(meta)[:3] == ["client_id", "database", "landing_zone"]
        assert "dataset_name" not in meta and "jobs" not in meta
    assert table_counts(stack, client.database, "users", "user_id") == (7, 7)
    assert table_counts(stack, client.database, "page_views", "page_view_id") == (42, 42)

    conn = pg.connect(stack.postgres)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, count(*), sum(rows_loaded) FROM batch_files"
                " WHERE client_id = %s AND status = 'loaded' GROUP BY table_name ORDER BY 1",
                (client.client_id,),
            )
            assert cur.fetchall() == [("page_views", 3, 42), ("users", 2, 8)]
    finally:
        conn.close()


def test_a_new_file_loads_only_its_rows_and_merges_on_the_key(
    stack: Settings, instance: DagsterInstance, batch_client: Any
) -> None:
    client, landing = batch_client()
    assert load(instance, client.client_id).success
    # 3 rows: two new page views and one that updates a sample row (same page_view_id).
    [(existing_id,)] = ch(
        stack,
        f"SELECT page_view_id FROM `{client.database}`.page_views"
        " WHERE _source_file = 'page_views/page_views_2024-05-01.jsonl' AND _source_line = 1",
    )
    (landing / "page_views" / "page_views_2024-05-04.jsonl").write_text(
        f'{{"page_view_id": "{existing_id}", "user_id": "u-001", "url": "/changed"}}\n'
        '{"page_view_id": "new-1", "user_id": "u-002", "url": "/a"}\n'
        '{"event_id": "new-2", "user_id": "u-002", "url": "/b"}\n'
    )
    again = load(instance, client.client_id)
    assert again.success
    assert again.metadata["page_views"]["rows_loaded"] == 3
    assert again.metadata["page_views"]["files_consumed"] == [
        "page_views/page_views_2024-05-04.jsonl"
    ]
    assert again.metadata["users"]["rows_loaded"] == 0
    assert table_counts(stack, client.database, "page_views", "page_view_id") == (44, 44)
    assert ch(
        stack,
        f"SELECT url FROM `{client.database}`.page_views WHERE page_view_id = '{existing_id}'",
    ) == [("/changed",)]


def test_malformed_file_is_reported_with_line_and_the_rest_loads(
    stack: Settings, instance: DagsterInstance, batch_client: Any
) -> None:
    client, landing = batch_client(samples=False)
    add_file(landing, "users", "users_line_3_not_json.jsonl", "bad.jsonl")
    add_file(landing, "users", "users_valid_with_blank_line.jsonl", "good.jsonl")
    add_file(landing, "page_views", "page_views_line_3_wrong_field_count.csv", "bad.csv")
    add_file(landing, "page_views", "page_views_valid_typed.csv", "good.csv")
    run = load(instance, client.client_id)
    assert run.success
    users, views = run.metadata["users"], run.metadata["page_views"]
    assert users["files_consumed"] == ["users/good.jsonl"] and users["rows_loaded"] == 3
    [bad_users] = users["files_rejected"]
    assert bad_users.startswith("users/bad.jsonl: line 3: not JSON")
    [bad_views] = views["files_rejected"]
    assert bad_views.startswith(
        "page_views/bad.csv: line 3: expected 3 fields as in the header, got 2 (+1 more)"
    )
    assert any("file rejected: users/bad.jsonl: line 3" in line for line in run.logs)
    # Nothing of a rejected file is in the table, not even its good lines.
    assert ch(stack, f"SELECT count() FROM `{client.database}`.users") == [(3,)]
    assert ch(stack, f"SELECT count() FROM `{client.database}`.page_views") == [(3,)]
    conn = pg.connect(stack.postgres)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT file_path, problem_line, problem FROM batch_files"
                " WHERE client_id = %s AND status = 'rejected' ORDER BY file_path",
                (client.client_id,),
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    assert [(r[0], r[1]) for r in rows] == [("page_views/bad.csv", 3), ("users/bad.jsonl", 3)]
    # Still reported on the next run (without being read again), until fixed.
    again = load(instance, client.client_id)
    assert again.metadata["users"]["files_rejected"] == [bad_users]
    (landing / "users" / "bad.jsonl").write_text('{"user_id": "fixed-1"}\n')
    fixed = load(instance, client.client_id)
    assert fixed.metadata["users"]["files_consumed"] == ["users/bad.jsonl"]
    assert fixed.metadata["users"]["files_rejected"] == []
    assert ch(stack, f"SELECT count() FROM `{client.database}`.users") == [(4,)]


def test_schema_evolution_adds_columns(
    stack: Settings, instance: DagsterInstance, batch_client: Any
) -> None:
    client, landing = batch_client(samples=False)
    add_file(landing, "users", "users_valid_with_blank_line.jsonl", "a.jsonl")
    assert load(instance, client.client_id).success
    add_file(landing, "users", "users_columns_added.jsonl", "b.jsonl")
    assert load(instance, client.client_id).success
    columns = {
        r[0]
        for r in ch(
            stack,
            f"SELECT name FROM system.columns WHERE database = '{client.database}'"
            " AND table = 'users'",
        )
    }
    assert {"referral_code", "company__name", "company__size"} <= columns
    assert ch(
        stack,
        f"SELECT company__name FROM `{client.database}`.users WHERE user_id = 'u-2'",
    ) == [("Acme",)]


def test_inactive_client_is_skipped_with_a_clear_message(
    stack: Settings, instance: DagsterInstance, batch_client: Any
) -> None:
    client, _landing = batch_client(active=False)
    run = load(instance, client.client_id)
    assert run.success and set(run.metadata) == {"users", "page_views"}
    for meta in run.metadata.values():
        assert meta["skipped"] is True and meta["rows_loaded"] == 0
        assert meta["skip_reason"].endswith("is pending; only active clients load batch data")
    assert any(
        f"batch load skipped: client {client.client_id} is pending; only active clients load"
        in line
        for line in run.logs
    )


def test_two_clients_loaded_and_re_run_without_duplicates(
    stack: Settings, instance: DagsterInstance, batch_client: Any
) -> None:
    (a, _), (b, landing_b) = batch_client(), batch_client()
    add_file(landing_b, "users", "users_valid_with_blank_line.jsonl", "extra.jsonl")
    for _ in range(2):  # the backfill, then the same backfill again
        for c in (a, b):
            assert load(instance, c.client_id).success
    assert table_counts(stack, a.database, "users", "user_id") == (7, 7)
    assert table_counts(stack, b.database, "users", "user_id") == (10, 10)
    for c in (a, b):
        assert table_counts(stack, c.database, "page_views", "page_view_id") == (42, 42)
        state = ch(stack, f"SELECT DISTINCT pipeline_name FROM `{c.database}`._dlt_pipeline_state")
        assert state == [("batch_load__" + c.client_id.replace("-", "_"),)]


def test_half_failed_load_is_not_visible_twice(
    stack: Settings, instance: DagsterInstance, batch_client: Any
) -> None:
    """users merges, page_views fails (its table refuses the rows): the run fails, the ledger is not
    committed; after the fix the files load again and users has no duplicate."""
    client, _landing = batch_client()
    ch(
        stack,
        f"CREATE TABLE `{client.database}`.page_views (page_view_id String, url String,"
        " CONSTRAINT no_pricing CHECK url != '/pricing') ENGINE = MergeTree ORDER BY page_view_id",
    )
    failed = load(instance, client.client_id)
    assert not failed.success
    assert table_counts(stack, client.database, "users", "user_id") == (7, 7)
    ch(stack, f"ALTER TABLE `{client.database}`.page_views DROP CONSTRAINT no_pricing")
    retried = load(instance, client.client_id)
    assert retried.success
    assert retried.metadata["users"]["rows_loaded"] == SAMPLE_USER_ROWS  # read again...
    assert table_counts(stack, client.database, "users", "user_id") == (7, 7)  # ...no duplicate
    assert table_counts(stack, client.database, "page_views", "page_view_id") == (42, 42)


def test_dlt_bookkeeping_is_left_out_of_the_client_counts(
    stack: Settings, instance: DagsterInstance, batch_client: Any
) -> None:
    client, _landing = batch_client()
    assert load(instance, client.client_id).success
    with open_connections(stack) as c:
        present = {r[0] for r in ch(stack, f"SHOW TABLES FROM `{client.database}`")}
        assert {"_dlt_loads", "_dlt_pipeline_state", "dlt_sentinel_table"} <= present
        assert any(t.startswith("_staging") for t in present)
        counted = lifecycle.client_row_counts(c.clickhouse, client.database)
        assert set(counted) == {"events_base", "users", "page_views"}
        gone = lifecycle.deprovision(c, client.client_id, client.client_id)
    assert isinstance(gone, lifecycle.Deprovisioned)
    assert gone.rows_before == {"events_base": 0, "users": 7, "page_views": 42}


def test_seed_sample_sets_the_batch_source_once(
    stack: Settings, make_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = make_client("t4")
    first = seed(stack, client.client_id)
    assert first.__class__.__name__ == "Seeded"
    assert first.url == str(stack.state_dir / "landing" / client.client_id)  # type: ignore[union-attr]
    assert first.source_set  # type: ignore[union-attr]
    assert len(first.files) == len(package_data.walk_files(package_data.sample_landing()))  # type: ignore[union-attr]
    other = seed(stack, client.client_id, str(tmp_path / "elsewhere"))
    assert not other.source_set and other.source_url == first.url  # type: ignore[union-attr]
    shutil.rmtree(first.url)  # type: ignore[union-attr]


def test_schedule_requests_one_run_per_active_client_with_a_batch_source(
    stack: Settings, batch_client: Any, make_client: Any, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from dagster import Definitions, build_schedule_context

    from analytics_pipeline.defs.batch_loads.schedules import BATCH_SCHEDULES, batch_loads_schedule
    from analytics_pipeline.resources import PostgresMetadataResource

    defs = Definitions(
        assets=batch_assets(),
        schedules=BATCH_SCHEDULES,
        resources={**default_resources(), **BATCH_RESOURCES},
    )

    (tmp_path / "dagster").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "dagster"))
    (ready, _), (pending, _) = batch_client(), batch_client(active=False)
    (no_partition, _), no_source = batch_client(), make_client("t4")
    for c in (ready, pending, no_source):
        instance.add_dynamic_partitions(CLIENTS_PARTITIONS_NAME, [c.client_id])
    when = datetime(2026, 1, 1, 10, 5, tzinfo=UTC)
    context = build_schedule_context(
        instance=instance,
        instance_ref=instance.get_ref(),
        repository_def=defs.get_repository_def(),
        scheduled_execution_time=when,
        resources={"postgres": PostgresMetadataResource()},
    )
    data = batch_loads_schedule.evaluate_tick(context)
    requested = {r.partition_key: r for r in data.run_requests or []}
    assert ready.client_id in requested
    assert requested[ready.client_id].run_key == f"batch:{ready.client_id}:{when.isoformat()}"
    for c in (pending, no_partition, no_source):
        assert c.client_id not in requested


def test_materializing_one_table_loads_only_that_table(
    stack: Settings, instance: DagsterInstance, batch_client: Any
) -> None:
    from dagster import AssetKey

    client, _landing = batch_client()
    instance.add_dynamic_partitions(CLIENTS_PARTITIONS_NAME, [client.client_id])
    result = materialize(
        batch_assets(),
        selection=[AssetKey(["batch", "users"])],
        partition_key=client.client_id,
        instance=instance,
        resources={**default_resources(), **BATCH_RESOURCES},
    )
    [m] = result.asset_materializations_for_node("batch_loads")
    assert m.asset_key == AssetKey(["batch", "users"])
    assert m.metadata["rows_loaded"].value == SAMPLE_USER_ROWS
    tables = {r[0] for r in ch(stack, f"SHOW TABLES FROM `{client.database}`")}
    assert "users" in tables and "page_views" not in tables
    # The page_views files were not consumed: the next full load takes them.
    assert load(instance, client.client_id).metadata["page_views"]["rows_loaded"] == 42
