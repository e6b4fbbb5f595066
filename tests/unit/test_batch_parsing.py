"""Landing-file parsing: every bad line named with its number and reason (fixtures say the case)."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from analytics_core.batch.formats import FileFormat, detect_format
from analytics_core.batch.parquet_rows import parse_parquet
from analytics_core.batch.parsing import (
    CsvType,
    CsvTypeInference,
    LineProblem,
    Row,
    parse_csv,
    parse_jsonl,
    value_type,
    widen,
)
from analytics_core.batch.tables import PAGE_VIEWS, USERS, source_seq

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "batch"


def lines(name: str) -> list[bytes]:
    return (FIXTURES / name).read_bytes().splitlines(keepends=True)


def problems(items: list[Row | LineProblem]) -> list[tuple[int, str]]:
    return [(p.line, p.reason) for p in items if isinstance(p, LineProblem)]


def rows(items: list[Row | LineProblem]) -> list[Row]:
    return [r for r in items if isinstance(r, Row)]


def test_formats_by_suffix_and_hidden_files_ignored() -> None:
    assert detect_format("users/a.jsonl") is FileFormat.JSONL
    assert detect_format("users/a.NDJSON") is FileFormat.JSONL
    assert detect_format("page_views/2024/05/a.csv") is FileFormat.CSV
    assert detect_format("page_views/a.parquet") is FileFormat.PARQUET
    assert detect_format("users/README.md") is None
    assert detect_format("users/.a.jsonl") is None
    assert detect_format("users/_tmp_upload.jsonl") is None


def test_jsonl_valid_with_blank_line_and_integer_key() -> None:
    items = list(parse_jsonl(lines("users_valid_with_blank_line.jsonl"), USERS))
    assert problems(items) == []
    got = rows(items)
    assert [r.line for r in got] == [1, 2, 4]
    assert got[2].values["user_id"] == "3"  # keys load as strings


def test_jsonl_line_3_not_json() -> None:
    items = list(parse_jsonl(lines("users_line_3_not_json.jsonl"), USERS))
    [(line, reason)] = problems(items)
    assert line == 3 and reason.startswith("not JSON")
    assert len(rows(items)) == 3


def test_jsonl_every_bad_line_has_its_reason() -> None:
    got = problems(list(parse_jsonl(lines("users_several_bad_lines.jsonl"), USERS)))
    assert got == [
        (2, "missing primary key user_id"),
        (3, "expected a JSON object, got an array"),
        (4, "missing primary key user_id"),
        (5, "primary key user_id must be a string or an integer, got float"),
        (6, "primary key user_id must be a string or an integer, got bool"),
    ]


def test_jsonl_invalid_utf8_is_named() -> None:
    [(line, reason)] = problems(list(parse_jsonl([b'{"user_id": "a"}\n', b"\xff\xfe\n"], USERS)))
    assert line == 2 and reason.startswith("not UTF-8")


def test_page_views_key_falls_back_to_event_id() -> None:
    got = rows(list(parse_jsonl(lines("page_views_keyed_by_event_id.jsonl"), PAGE_VIEWS)))
    assert [r.values["page_view_id"] for r in got] == ["e-1", "pv-2"]


def test_csv_types_are_inferred_per_file_and_keys_stay_text() -> None:
    check = list(parse_csv(lines("page_views_valid_typed.csv"), PAGE_VIEWS))
    assert problems(check) == []
    inference = CsvTypeInference(PAGE_VIEWS)
    for r in rows(check):
        inference.observe(r)
    types = inference.result()
    assert types == {
        "page_view_id": CsvType.TEXT,
        "user_id": CsvType.TEXT,
        "url": CsvType.TEXT,
        "duration_ms": CsvType.INT,
        "ratio": CsvType.FLOAT,
        "bounced": CsvType.BOOL,
        "zip": CsvType.TEXT,
    }
    got = rows(list(parse_csv(lines("page_views_valid_typed.csv"), PAGE_VIEWS, types)))
    assert [r.line for r in got] == [2, 3, 4]  # the third record spans lines 4-5
    assert got[0].values == {
        "page_view_id": "pv-1",
        "user_id": "u-1",
        "url": "/",
        "duration_ms": 1200,
        "ratio": 0.5,
        "bounced": True,
        "zip": "0123",
    }
    assert got[1].values["url"] == "/a,b" and got[1].values["duration_ms"] is None
    assert got[1].values["bounced"] is False and got[1].values["ratio"] == 1.0
    assert got[2].values["url"] == "/multi\nline" and got[2].values["zip"] is None


def test_csv_wrong_field_count_names_each_line() -> None:
    got = problems(list(parse_csv(lines("page_views_line_3_wrong_field_count.csv"), PAGE_VIEWS)))
    assert got == [
        (3, "expected 3 fields as in the header, got 2"),
        (4, "expected 3 fields as in the header, got 4"),
    ]


def test_csv_unterminated_quote() -> None:
    [(line, reason)] = problems(
        list(parse_csv(lines("page_views_unterminated_quote.csv"), PAGE_VIEWS))
    )
    assert line == 2 and reason.startswith("malformed CSV")


def test_csv_invalid_utf8_line() -> None:
    got = problems(list(parse_csv(lines("page_views_line_2_invalid_utf8.csv"), PAGE_VIEWS)))
    assert len(got) == 1 and got[0][0] == 2 and got[0][1].startswith("not UTF-8")


def test_csv_bom_and_leading_zero_ids() -> None:
    got = rows(list(parse_csv(lines("users_bom_and_leading_zero_ids.csv"), USERS)))
    assert [r.values["user_id"] for r in got] == ["007", "7"]


def test_csv_header_problems() -> None:
    assert problems(list(parse_csv(lines("users_header_repeats_column.csv"), USERS))) == [
        (1, "header repeats the column name 'user_id'")
    ]
    assert problems(list(parse_csv(lines("users_empty.csv"), USERS))) == [
        (0, "empty file: a header line is required")
    ]


def test_value_types_and_widening() -> None:
    assert value_type("42") is CsvType.INT
    assert value_type("-0") is CsvType.INT
    assert value_type("007") is CsvType.TEXT
    assert value_type("1.5") is CsvType.FLOAT
    assert value_type("1e3") is CsvType.FLOAT
    assert value_type(".") is CsvType.TEXT
    assert value_type("True") is CsvType.BOOL
    assert value_type("") is None
    assert value_type("12345678901234567890") is CsvType.FLOAT  # beyond int64: not an int
    assert widen(CsvType.INT, CsvType.FLOAT) is CsvType.FLOAT
    assert widen(CsvType.INT, CsvType.BOOL) is CsvType.TEXT
    assert widen(None, CsvType.BOOL) is CsvType.BOOL
    assert widen(CsvType.INT, None) is CsvType.INT


def _parquet(rows_: list[dict[str, object]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows_), sink)
    return sink.getvalue()


def test_parquet_rows_and_missing_keys() -> None:
    data = _parquet(
        [{"event_id": "e-1", "url": "/"}, {"event_id": None, "url": "/x"}, {"event_id": "e-3"}]
    )
    items = list(parse_parquet(io.BytesIO(data), PAGE_VIEWS))
    assert [r.values["page_view_id"] for r in rows(items)] == ["e-1", "e-3"]
    assert problems(items) == [(2, "missing primary key page_view_id or event_id")]


def test_parquet_truncated_file_is_a_problem_not_an_exception() -> None:
    data = _parquet([{"user_id": f"u-{i}"} for i in range(100)])
    [(line, reason)] = problems(list(parse_parquet(io.BytesIO(data[: len(data) // 2]), USERS)))
    assert line == 0 and "Parquet" in reason


def test_source_seq_orders_by_file_then_line() -> None:
    assert source_seq(0, 10) < source_seq(0, 11) < source_seq(1, 1)
