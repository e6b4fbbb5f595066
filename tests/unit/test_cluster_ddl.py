"""DDL for a ClickHouse cluster target (analytics_core.migrations.cluster_ddl), tested without
a cluster: chdb-core has no interserver port and refuses replicated DDL, so what reaches a
real cluster is checked here as text (and parsed by ClickHouse's own parser in
tests/integration/test_placement_and_moves.py)."""

from __future__ import annotations

import pytest

from analytics_core.events_table import events_view_sql
from analytics_core.migrations import files
from analytics_core.migrations.cluster_ddl import (
    REPLICA_ARGS,
    NotClusterSafe,
    render,
    replicated_engine,
    single_server_engine,
)
from analytics_core.migrations.files import split_statements

DB = "client_acme"


def test_without_a_cluster_statements_are_issued_unchanged() -> None:
    for m in files.load():
        for statement in split_statements(m.sql):
            assert render(statement, DB, "") == statement


def test_the_base_schema_becomes_a_replicated_table_on_the_cluster() -> None:
    base = files.load()[0]
    create, view = split_statements(base.sql)
    out = render(create, DB, "analytics")
    assert out.startswith(
        "CREATE TABLE IF NOT EXISTS `client_acme`.events_base ON CLUSTER 'analytics'"
    )
    assert f"ENGINE = ReplicatedReplacingMergeTree({REPLICA_ARGS}, ingested_at)" in out
    # Everything after the engine (partitioning, sort key, settings) is kept as written.
    assert "ORDER BY (toDate(event_timestamp), event_name, event_id)" in out
    assert "PARTITION BY toYYYYMM(event_timestamp)" in out
    assert render(view, DB, "analytics") == (
        "CREATE VIEW IF NOT EXISTS `client_acme`.events ON CLUSTER 'analytics'"
        " AS SELECT * FROM events_base FINAL"
    )


def test_every_shipped_migration_renders_for_a_cluster() -> None:
    for m in files.load():
        for statement in split_statements(m.sql):
            out = render(statement, DB, "analytics")
            assert "ON CLUSTER 'analytics'" in out, out
            assert "MergeTree(" not in out or "ReplicatedReplacingMergeTree(" in out, out


def test_alter_add_column_goes_to_every_replica() -> None:
    out = render("ALTER TABLE events_base ADD COLUMN IF NOT EXISTS x String", DB, "c1")
    assert (
        out
        == "ALTER TABLE `client_acme`.events_base ON CLUSTER 'c1' ADD COLUMN IF NOT EXISTS x String"
    )


def test_the_events_view_is_replaced_on_every_replica() -> None:
    out = render(events_view_sql(DB, ["event_id", "page_url"]), DB, "c1")
    assert out.startswith("CREATE OR REPLACE VIEW `client_acme`.events ON CLUSTER 'c1' AS SELECT")


def test_database_statements_and_renames_carry_the_cluster() -> None:
    assert (
        render("CREATE DATABASE IF NOT EXISTS `client_acme`", DB, "c1")
        == "CREATE DATABASE IF NOT EXISTS `client_acme` ON CLUSTER 'c1'"
    )
    assert (
        render("DROP DATABASE IF EXISTS `client_acme` SYNC", DB, "c1")
        == "DROP DATABASE IF EXISTS `client_acme` ON CLUSTER 'c1' SYNC"
    )
    assert (
        render("RENAME TABLE events_base TO events_base__moving", DB, "c1")
        == "RENAME TABLE `client_acme`.events_base TO `client_acme`.events_base__moving"
        " ON CLUSTER 'c1'"
    )


def test_engines_without_arguments_and_already_replicated_ones() -> None:
    assert replicated_engine("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a") == (
        f"CREATE TABLE t (a UInt8) ENGINE = ReplicatedMergeTree({REPLICA_ARGS}) ORDER BY a"
    )
    already = "CREATE TABLE t (a UInt8) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY a"
    assert replicated_engine(already) == already
    nested = "CREATE TABLE t (a UInt8, v UInt8) ENGINE = ReplacingMergeTree((v)) ORDER BY a"
    assert f"ReplicatedReplacingMergeTree({REPLICA_ARGS}, (v)) ORDER BY a" in replicated_engine(
        nested
    )


def test_a_table_copied_from_a_cluster_to_one_server_loses_the_replication_arguments() -> None:
    shown = (
        "CREATE TABLE client_acme.users (a String) ENGINE = ReplicatedReplacingMergeTree"
        "('/clickhouse/tables/{uuid}/{shard}', '{replica}', v) ORDER BY a"
    )
    assert single_server_engine(shown) == (
        "CREATE TABLE client_acme.users (a String) ENGINE = ReplacingMergeTree(v) ORDER BY a"
    )
    plain = "CREATE TABLE t (a String) ENGINE = MergeTree ORDER BY a"
    assert single_server_engine(plain) == plain


@pytest.mark.parametrize(
    ("statement", "why"),
    [
        ("INSERT INTO events_base SELECT 1", "can not be issued ON CLUSTER"),
        ("OPTIMIZE TABLE events_base FINAL", "can not be issued ON CLUSTER"),
        ("CREATE TABLE t (a UInt8) ENGINE = Memory", "only MergeTree-family engines"),
        ("ALTER TABLE t ON CLUSTER other ADD COLUMN b UInt8", "already names a cluster"),
    ],
)
def test_statements_that_would_leave_replicas_apart_are_refused(statement: str, why: str) -> None:
    with pytest.raises(NotClusterSafe, match=why):
        render(statement, DB, "c1")


def test_a_malformed_cluster_name_is_refused() -> None:
    with pytest.raises(NotClusterSafe, match="cluster name"):
        render("ALTER TABLE t ADD COLUMN b UInt8", DB, "a'; DROP")
