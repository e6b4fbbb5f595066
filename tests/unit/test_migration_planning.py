"""Migration planning: ordering, checksums, pending set, file naming, statement splitting."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics_core.events_table import events_view_sql, view_is_stale
from analytics_core.migrations.files import (
    MigrationFile,
    MigrationFileError,
    checksum,
    load,
    parse_filename,
    split_statements,
)
from analytics_core.migrations.planning import Plan, Refused, plan
from analytics_core.naming import InvalidIdentifier
from analytics_core.registry import AppliedVersion


def mf(version: int, sql: str = "SELECT 1") -> MigrationFile:
    return MigrationFile(version, f"m{version}", sql, checksum(sql.encode()))


def applied(m: MigrationFile) -> AppliedVersion:
    return AppliedVersion(m.version, m.name, m.checksum)


def test_fresh_database_gets_everything_in_version_order() -> None:
    files = [mf(2), mf(0), mf(1)]
    result = plan(files, [])
    assert isinstance(result, Plan)
    assert [m.version for m in result.pending] == [0, 1, 2]


def test_only_missing_versions_are_pending() -> None:
    files = [mf(0), mf(1), mf(2), mf(3)]
    result = plan(files, [applied(files[0]), applied(files[2])])
    assert isinstance(result, Plan) and [m.version for m in result.pending] == [1, 3]
    assert plan(files, [applied(f) for f in files]) == Plan(())


def test_edited_applied_migration_is_refused() -> None:
    original = mf(1, "ALTER TABLE t ADD COLUMN a String")
    edited = mf(1, "ALTER TABLE t ADD COLUMN b String")
    result = plan([mf(0), edited], [applied(mf(0)), applied(original)])
    assert isinstance(result, Refused) and result.version == 1
    assert "must not be edited" in result.reason


def test_deleted_applied_migration_is_refused() -> None:
    result = plan([mf(0)], [applied(mf(0)), applied(mf(1))])
    assert isinstance(result, Refused) and "gone" in result.reason


@pytest.mark.parametrize(
    "name", ["v1_x.sql", "v001-x.sql", "v001_X.sql", "001_x.sql", "v000_x.sql"]
)
def test_misnamed_files_are_refused(name: str) -> None:
    with pytest.raises(MigrationFileError):
        parse_filename(name)


def test_good_name() -> None:
    assert parse_filename("v012_add_session_id.sql") == (12, "add_session_id")


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    (tmp_path / "v001_a.sql").write_text("SELECT 1")
    (tmp_path / "v001_b.sql").write_text("SELECT 2")
    with pytest.raises(MigrationFileError, match="also used"):
        load(tmp_path)


def test_repository_migrations_load_with_base_schema_first() -> None:
    files = load()
    assert files[0].version == 0 and "events_base" in files[0].sql
    assert [f.version for f in files] == sorted(f.version for f in files)


def test_split_statements_respects_quotes_and_comments() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE a (x String DEFAULT 'a;b');
    /* block; comment */ ALTER TABLE a ADD COLUMN y String COMMENT "q;q";
    ;
    """
    assert split_statements(sql) == [
        "CREATE TABLE a (x String DEFAULT 'a;b')",
        'ALTER TABLE a ADD COLUMN y String COMMENT "q;q"',
    ]


def test_events_view_lists_every_base_column_by_name() -> None:
    sql = events_view_sql("client_acme", ["event_id", "page_url", "session_id"])
    assert sql == (
        "CREATE OR REPLACE VIEW `client_acme`.events AS"
        " SELECT `event_id`, `page_url`, `session_id` FROM `client_acme`.events_base FINAL"
    )
    assert "*" not in sql
    with pytest.raises(InvalidIdentifier):
        events_view_sql("client_acme", ["event_id", "x`; DROP TABLE t; --"])
    assert not view_is_stale(["a", "b"], ["a", "b"])
    assert view_is_stale(["a", "b", "page_url"], ["a", "b"])  # a column added later
    assert view_is_stale(["a", "b"], [])  # no view at all


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("ALTER TABLE events_base ADD COLUMN a String", "ADD COLUMN without IF NOT EXISTS"),
        (
            "ALTER TABLE events_base ADD COLUMN IF NOT EXISTS a String, add index i a"
            " TYPE bloom_filter GRANULARITY 4",
            "ADD INDEX without IF NOT EXISTS",
        ),
        ("alter table `events_base` drop column a", "DROP COLUMN without IF EXISTS"),
        ("ALTER TABLE t ON CLUSTER '{c}' RENAME COLUMN a TO b", "RENAME COLUMN without IF"),
        ("ALTER TABLE t ADD PROJECTION p (SELECT *)", "ADD PROJECTION without IF NOT"),
        ("CREATE TABLE x (a Int8) ENGINE = Log", "CREATE without IF NOT EXISTS"),
        ("create materialized view mv TO t AS SELECT 1", "CREATE without IF NOT EXISTS"),
        ("DROP TABLE old", "DROP without IF EXISTS"),
    ],
)
def test_a_pending_migration_that_can_not_run_twice_is_refused_with_the_fix(
    sql: str, problem: str
) -> None:
    """A run killed between a statement and its record re-applies the whole file, so a
    statement that fails the second time would leave the client stuck for good."""
    first = mf(1, "ALTER TABLE t ADD COLUMN IF NOT EXISTS z String")
    bad = mf(2, f"-- a comment; with a semicolon\n{first.sql};\n{sql};")
    result = plan([mf(0), first, bad], [applied(mf(0))])
    assert isinstance(result, Refused) and result.version == 2
    assert f"statement 2 ({' '.join(sql.split())[:80]!r}) is {problem}" in result.reason
    assert "write it with IF [NOT] EXISTS" in result.reason
    # Applied already: it is never run again, so it no longer matters.
    assert plan([mf(0), first, bad], [applied(f) for f in (mf(0), first, bad)]) == Plan(())


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE events_base ADD COLUMN IF NOT EXISTS a String DEFAULT 'add column b',"
        " ADD INDEX IF NOT EXISTS i a TYPE set(0) GRANULARITY 1",
        "ALTER TABLE t DROP COLUMN IF EXISTS a, RENAME COLUMN IF EXISTS b TO c",
        "ALTER TABLE t MODIFY COLUMN a LowCardinality(String), MATERIALIZE INDEX i",
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS m Map(String, String) COMMENT 'drop table x'",
        "CREATE TABLE IF NOT EXISTS x (a Int8) ENGINE = Log",
        "CREATE OR REPLACE VIEW v AS SELECT 1",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS mv TO t AS SELECT 1",
        "DROP VIEW IF EXISTS v",
        "OPTIMIZE TABLE events_base FINAL",
    ],
)
def test_re_runnable_statements_are_planned(sql: str) -> None:
    result = plan([mf(0), mf(1, sql)], [applied(mf(0))])
    assert isinstance(result, Plan) and [m.version for m in result.pending] == [1]


def test_the_shipped_schema_and_migrations_can_all_run_twice() -> None:
    files = load()
    result = plan(files, [])
    assert isinstance(result, Plan) and len(result.pending) == len(files)
