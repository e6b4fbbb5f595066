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
from analytics_core.migrations.rerunnable import already_applied, rerun_problem, statement_problem
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
    ("sql", "error", "applied"),
    [
        (
            "ALTER TABLE events_base ADD COLUMN a String",
            "Code: 15. DB::Exception: Cannot add"
            " column `a`: column with this name already exists. (DUPLICATE_COLUMN)",
            True,
        ),
        (
            "alter table `events_base` add index i a TYPE set(0) GRANULARITY 1",
            "Code: 44. DB::Exception: Cannot add index i: index with this name already exists",
            True,
        ),
        (
            "ALTER TABLE t ADD INDEX i a TYPE set(0) GRANULARITY 1",
            "Code: 44. DB::Exception: Wrong index expression (ILLEGAL_COLUMN)",
            False,
        ),
        (
            "ALTER TABLE t ADD PROJECTION p (SELECT *)",
            "Code: 583. DB::Exception: Cannot add"
            " projection p: projection with this name already exists",
            True,
        ),
        (
            "ALTER TABLE t ON CLUSTER '{c}' DROP COLUMN a",
            "Code: 10. DB::Exception: Wrong column name. Cannot find column `a` to drop",
            True,
        ),
        (
            "ALTER TABLE t RENAME COLUMN a TO b",
            "Code: 10. DB::Exception: Wrong column name. Cannot find column `a` to rename",
            True,
        ),
        (
            "ALTER TABLE t DROP INDEX i",
            "Code: 36. DB::Exception: Wrong index name. Cannot find index `i` to drop",
            True,
        ),
        (
            "ALTER TABLE t DROP PROJECTION p",
            "Code: 582. DB::Exception: There is no projection",
            True,
        ),
        ("CREATE TABLE x (a Int8) ENGINE = Log", "Code: 57. Table d.x already exists.", True),
        (
            "create materialized view mv TO t AS SELECT 1",
            "Code: 57. Table d.mv already exists.",
            True,
        ),
        ("DROP TABLE old", "Code: 60. DB::Exception: Table d.old does not exist.", True),
        # Not the form's "done" error, or not a form that fails twice: the run fails.
        ("CREATE TABLE x (a Int8) ENGINE = Log", "Code: 62. Syntax error", False),
        ("ALTER TABLE t MODIFY COLUMN a UInt8", "Code: 10. Cannot find column `a`", False),
        ("ALTER TABLE t ADD COLUMN IF NOT EXISTS a UInt8", "Code: 15. already exists", False),
        ("ALTER TABLE t ADD COLUMN a UInt8", "connection reset by peer", False),
        # Several clauses: one found done says nothing of the others.
        ("ALTER TABLE t ADD COLUMN a UInt8, ADD COLUMN b UInt8", "Code: 15. already exists", False),
        (
            "ALTER TABLE t ADD COLUMN a UInt8 DEFAULT 'drop column x, add column y'",
            "Code: 15.",
            True,
        ),
    ],
)
def test_a_statement_found_already_applied_is_told_from_a_real_failure(
    sql: str, error: str, applied: bool
) -> None:
    """A re-run after an interruption re-applies the whole file; a statement that fails only
    because the run before applied it counts as applied (what IF [NOT] EXISTS would do)."""
    assert already_applied(sql, error) is applied


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        (
            "ALTER TABLE events_base ADD COLUMN IF NOT EXISTS a String, add index i a"
            " TYPE bloom_filter GRANULARITY 4",
            "ADD INDEX without IF NOT EXISTS in a statement of several clauses",
        ),
        ("ALTER TABLE t ADD STATISTICS a TYPE tdigest", "ADD STATISTICS without IF NOT EXISTS"),
    ],
)
def test_a_statement_no_re_run_could_heal_is_named_with_its_fix(sql: str, problem: str) -> None:
    first = "ALTER TABLE t ADD COLUMN z String"  # heals: counted as applied when z exists
    found = rerun_problem(f"-- a comment; with a semicolon\n{first};\n{sql};")
    assert found is not None
    assert found.startswith(f"statement 2 ({' '.join(sql.split())[:80]!r}) is {problem}: ")
    assert found.endswith("write IF [NOT] EXISTS")


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE events_base ADD COLUMN IF NOT EXISTS a String DEFAULT 'add column b',"
        " ADD INDEX IF NOT EXISTS i a TYPE set(0) GRANULARITY 1",
        "ALTER TABLE t DROP COLUMN IF EXISTS a, RENAME COLUMN IF EXISTS b TO c",
        "ALTER TABLE t MODIFY COLUMN a LowCardinality(String), MATERIALIZE INDEX i",
        "ALTER TABLE t ADD COLUMN a UInt8",
        "CREATE TABLE x (a Int8) ENGINE = Log",
        "CREATE OR REPLACE VIEW v AS SELECT 1",
        "DROP VIEW v",
        "OPTIMIZE TABLE events_base FINAL",
    ],
)
def test_statements_that_run_twice_or_heal_pass(sql: str) -> None:
    assert rerun_problem(sql) is None


@pytest.mark.parametrize(
    ("sql", "renaming", "adding"),
    [
        ("ALTER TABLE t ADD COLUMN a UInt8;\nALTER TABLE t RENAME COLUMN a TO b", 2, 1),
        (  # guarded forms do not help: the second run adds `a` again, then `b` is taken
            "ALTER TABLE t ADD COLUMN IF NOT EXISTS a UInt8;\n"
            "ALTER TABLE t RENAME COLUMN IF EXISTS a TO b",
            2,
            1,
        ),
        (  # the old name added back after the rename
            "ALTER TABLE t RENAME COLUMN IF EXISTS a TO b;\n"
            "ALTER TABLE t ADD COLUMN IF NOT EXISTS a UInt8",
            1,
            2,
        ),
        (  # quoted or not, one column; the new name may be the added one too
            "ALTER TABLE `t` ADD COLUMN IF NOT EXISTS `x y` String, ADD COLUMN IF NOT EXISTS"
            ' c UInt8;\nALTER TABLE t RENAME COLUMN IF EXISTS z TO "x y"',
            2,
            1,
        ),
    ],
)
def test_a_file_renaming_a_column_it_adds_is_refused_before_it_ships(
    sql: str, renaming: int, adding: int
) -> None:
    """Re-applied after an interruption, such a file adds the column a second time and its
    rename then finds the new name taken: no IF [NOT] EXISTS can heal that."""
    assert_refused(
        sql,
        renaming,
        f"renames a column that statement {adding} of the same file adds",
        "put the rename in a file of its own",
    )


def assert_refused(sql: str, statement: int, says: str, fix: str) -> None:
    found = rerun_problem(sql)
    assert found is not None
    assert found.startswith(f"statement {statement} (")
    assert says in found
    assert found.endswith(fix)


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS a UInt8;\nALTER TABLE u RENAME COLUMN a TO b",
        "ALTER TABLE t ADD COLUMN a UInt8 DEFAULT 'rename column a to b';\n"
        "ALTER TABLE t RENAME COLUMN IF EXISTS c TO d",
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS a UInt8, DROP COLUMN IF EXISTS b",
    ],
)
def test_renames_of_columns_the_file_does_not_add_pass(sql: str) -> None:
    assert rerun_problem(sql) is None


@pytest.mark.parametrize(
    ("sql", "adding", "dropping"),
    [
        (  # a type changed by drop and re-add, guarded as the other checks ask
            "ALTER TABLE t DROP COLUMN IF EXISTS a;\n"
            "ALTER TABLE t ADD COLUMN IF NOT EXISTS a Int64",
            2,
            1,
        ),
        ("ALTER TABLE t DROP COLUMN IF EXISTS a, ADD COLUMN IF NOT EXISTS a Int64", 1, 1),
        (  # quoted or not, in either case: one column
            "ALTER TABLE `t` DROP COLUMN IF EXISTS `Plan`;\n"
            "ALTER TABLE t ADD COLUMN IF NOT EXISTS c UInt8;\n"
            "ALTER TABLE t ADD COLUMN IF NOT EXISTS plan String",
            3,
            1,
        ),
    ],
)
def test_a_file_dropping_then_adding_a_column_is_refused_before_it_ships(
    sql: str, adding: int, dropping: int
) -> None:
    """Re-applied after an interruption, such a file drops the re-added column again, and
    with it every value written to it since the interrupted run."""
    assert_refused(
        sql,
        adding,
        f"adds a column that statement {dropping} of the same file drops",
        "change a type with MODIFY COLUMN, or put the add in a file of its own",
    )


@pytest.mark.parametrize(
    "sql",
    [
        # added then dropped: a second run ends where the first did
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS a UInt8;\nALTER TABLE t DROP COLUMN IF EXISTS a",
        "ALTER TABLE u DROP COLUMN IF EXISTS a;\nALTER TABLE t ADD COLUMN IF NOT EXISTS a UInt8",
        "ALTER TABLE t DROP COLUMN IF EXISTS a;\n"
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS b String DEFAULT 'add column a'",
    ],
)
def test_drops_of_columns_the_file_does_not_add_again_pass(sql: str) -> None:
    assert rerun_problem(sql) is None


def test_the_shipped_schema_and_migrations_can_all_run_twice() -> None:
    files = load()
    assert [f.version for f in files if rerun_problem(f.sql)] == []
    assert [statement_problem(s) for f in files for s in split_statements(f.sql)] == [
        None for f in files for _ in split_statements(f.sql)
    ]
