"""Extraction of a local landing zone without dlt or servers: all-or-nothing files, the
ledger, lineage columns, and a report where every file has exactly one fate."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from analytics_core.batch.extract import extract_table
from analytics_core.batch.landing_zone import LandingZone
from analytics_core.batch.ledger import Ledger
from analytics_core.batch.report import TableReport
from analytics_core.batch.tables import PAGE_VIEWS, SOURCE_FILE, SOURCE_LINE, USERS, TableSpec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "batch"


def put(root: Path, table: str, fixture: str, name: str | None = None) -> Path:
    target = root / table / (name or fixture)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / fixture, target)
    return target


def run(
    root: Path, spec: TableSpec, state: dict[str, Any]
) -> tuple[list[dict[str, Any]], TableReport]:
    report = TableReport(spec.name)
    out: list[dict[str, Any]] = []
    for chunk in extract_table(LandingZone(str(root)), spec, Ledger(state), report, chunk=2):
        out.extend(chunk)
    return out, report


def test_malformed_file_is_reported_and_the_others_load(tmp_path: Path) -> None:
    put(tmp_path, "users", "users_valid_with_blank_line.jsonl", "a.jsonl")
    put(tmp_path, "users", "users_line_3_not_json.jsonl", "b.jsonl")
    put(tmp_path, "users", "users_bom_and_leading_zero_ids.csv", "c.csv")
    (tmp_path / "users" / "README.md").write_text("not data")
    state: dict[str, Any] = {}
    rows, report = run(tmp_path, USERS, state)
    assert [r["user_id"] for r in rows] == ["u-1", "u-2", "3", "007", "7"]
    assert rows[0][SOURCE_FILE] == "users/a.jsonl" and rows[0][SOURCE_LINE] == 1
    assert [f.path for f in report.consumed] == ["users/a.jsonl", "users/c.csv"]
    [rejected] = report.rejected
    assert rejected.path == "users/b.jsonl" and not rejected.known
    assert rejected.describe().startswith("users/b.jsonl: line 3: not JSON")
    assert report.ignored == ["users/README.md"]
    assert set(state["files"]) == {"users/a.jsonl", "users/c.csv"}
    assert set(state["rejected"]) == {"users/b.jsonl"}


def test_second_run_reads_nothing_and_re_reports_the_bad_file(tmp_path: Path) -> None:
    put(tmp_path, "users", "users_valid_with_blank_line.jsonl", "a.jsonl")
    put(tmp_path, "users", "users_line_3_not_json.jsonl", "b.jsonl")
    state: dict[str, Any] = {}
    run(tmp_path, USERS, state)
    rows, report = run(tmp_path, USERS, state)
    assert rows == [] and report.unchanged == 1
    [rejected] = report.rejected
    assert rejected.known and rejected.problems[0].line == 3


def test_new_file_loads_only_its_rows_and_a_copy_is_recognised(tmp_path: Path) -> None:
    first = put(tmp_path, "page_views", "page_views_keyed_by_event_id.jsonl", "a.jsonl")
    state: dict[str, Any] = {}
    run(tmp_path, PAGE_VIEWS, state)
    put(tmp_path, "page_views", "page_views_valid_typed.csv", "b.csv")
    os.utime(first, (1, 1))  # touched: read again, but its content is already loaded
    rows, report = run(tmp_path, PAGE_VIEWS, state)
    assert [r["page_view_id"] for r in rows] == ["pv-1", "pv-2", "pv-3"]
    assert report.already_loaded == ["page_views/a.jsonl"]
    assert [f.path for f in report.consumed] == ["page_views/b.csv"]


def test_a_changed_file_loads_again_in_full(tmp_path: Path) -> None:
    path = put(tmp_path, "users", "users_valid_with_blank_line.jsonl", "a.jsonl")
    state: dict[str, Any] = {}
    run(tmp_path, USERS, state)
    path.write_text(path.read_text() + '{"user_id": "u-9"}\n')
    rows, report = run(tmp_path, USERS, state)
    assert [r["user_id"] for r in rows] == ["u-1", "u-2", "3", "u-9"]
    assert report.consumed[0].rows == 4


def test_missing_table_directory_is_no_files(tmp_path: Path) -> None:
    rows, report = run(tmp_path, USERS, {})
    assert rows == [] and report.consumed == [] and report.rejected == []


def test_ledger_is_only_written_after_the_last_row(tmp_path: Path) -> None:
    put(tmp_path, "users", "users_valid_with_blank_line.jsonl", "a.jsonl")
    state: dict[str, Any] = {}
    report = TableReport("users")
    gen = extract_table(LandingZone(str(tmp_path)), USERS, Ledger(state), report, chunk=1)
    next(gen)
    assert state["files"] == {}  # a load failing now commits nothing of the file
    for _ in gen:
        pass
    assert "users/a.jsonl" in state["files"]


@pytest.mark.parametrize("fixture", ["users_several_bad_lines.jsonl", "users_empty.csv"])
def test_bad_files_yield_no_rows(tmp_path: Path, fixture: str) -> None:
    put(tmp_path, "users", fixture)
    rows, report = run(tmp_path, USERS, {})
    assert rows == [] and len(report.rejected) == 1
