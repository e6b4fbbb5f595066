"""Pure parsing of JSONL and CSV landing files into rows or line-numbered problems.

Each parser turns the lines of one file (bytes, as read) into a stream of `Row` and
`LineProblem` items, so a caller can check a whole file first (collect problems, count
rows) and stream it again to load it. Nothing here raises for bad input.

Rules:
- JSONL: one JSON object per line; blank lines are ignored.
- CSV: UTF-8 (a BOM is allowed), first line is the header, RFC 4180 quoting, every record
  has as many fields as the header; empty fields are null. Column types are inferred per
  file (`infer_csv_types`, from the whole file) so "42" loads as a number only when every
  value of the column is one; values with leading zeros stay text.
- Both: the row's primary key (or one of its aliases, renamed) must be a non-empty string or
  an integer; it is loaded as a string.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from analytics_core.batch.tables import TableSpec

MAX_PROBLEMS = 5  # problems reported per file; the first one is the one to fix first
MAX_SHOWN = 120


@dataclass(frozen=True, slots=True)
class Row:
    line: int  # 1-based line (CSV: the line the record starts on) or Parquet row number
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LineProblem:
    line: int  # 0 = the file as a whole
    reason: str


ParseItem = Row | LineProblem


def _shown(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def keyed_row(doc: dict[str, Any], spec: TableSpec) -> dict[str, Any] | str:
    """`doc` with its primary key as a non-empty string, or why that is impossible."""
    name = spec.primary_key
    value = doc.get(name)
    if value is None or value == "":
        for alias in spec.key_aliases:
            if doc.get(alias) not in (None, ""):
                value = doc[alias]
                break
    if value is None or value == "":
        names = " or ".join((name, *spec.key_aliases))
        return f"missing primary key {names}"
    if isinstance(value, bool) or not isinstance(value, str | int):
        return f"primary key {name} must be a string or an integer, got {type(value).__name__}"
    text = str(value)
    if not text.strip():
        return f"primary key {name} is blank"
    doc[name] = text
    return doc


# ---------------------------------------------------------------------------------- JSONL


def parse_jsonl(lines: Iterable[bytes], spec: TableSpec) -> Iterator[ParseItem]:
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as uexc:
                yield LineProblem(number, f"not UTF-8: {uexc}")
                continue
            yield LineProblem(number, f"not JSON: {exc}")
            continue
        if not isinstance(doc, dict):
            yield LineProblem(number, f"expected a JSON object, got {_json_type(doc)}")
            continue
        keyed = keyed_row(doc, spec)
        if isinstance(keyed, str):
            yield LineProblem(number, keyed)
            continue
        yield Row(number, keyed)


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


# ---------------------------------------------------------------------------------- CSV


class CsvType(StrEnum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    TEXT = "text"


_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)?(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_BOOLS = {"true": True, "false": False}


def value_type(text: str) -> CsvType | None:
    """The narrowest type of one non-quoted CSV value; None for an empty value."""
    if text == "":
        return None
    if _INT.fullmatch(text):
        return CsvType.INT
    if any(c.isdigit() for c in text) and _FLOAT.fullmatch(text):
        return CsvType.FLOAT
    if text.lower() in _BOOLS:
        return CsvType.BOOL
    return CsvType.TEXT


def widen(a: CsvType | None, b: CsvType | None) -> CsvType | None:
    if a is None or a == b:
        return b if a is None else a
    if b is None:
        return a
    if {a, b} == {CsvType.INT, CsvType.FLOAT}:
        return CsvType.FLOAT
    return CsvType.TEXT


def convert(text: str, kind: CsvType | None) -> Any:
    if text == "":
        return None
    if kind is CsvType.INT:
        return int(text)
    if kind is CsvType.FLOAT:
        return float(text)
    if kind is CsvType.BOOL:
        return _BOOLS[text.lower()]
    return text


class _Decoded:
    """Decodes lines one by one, remembering which physical lines were not UTF-8."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = iter(lines)
        self.number = 0
        self.bad: dict[int, str] = {}

    def __iter__(self) -> Iterator[str]:
        for raw in self._lines:
            self.number += 1
            if self.number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.bad[self.number] = f"not UTF-8: {exc}"
                yield raw.decode("utf-8", errors="replace")


def parse_csv(
    lines: Iterable[bytes],
    spec: TableSpec,
    types: Mapping[str, CsvType | None] | None = None,
) -> Iterator[ParseItem]:
    """Rows with values typed by `types` (text when None: the checking pass)."""
    decoded = _Decoded(lines)
    reader = csv.reader(decoded, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        yield LineProblem(0, "empty file: a header line is required")
        return
    except csv.Error as exc:
        yield LineProblem(1, f"unreadable header: {exc}")
        return
    if 1 in decoded.bad:
        yield LineProblem(1, decoded.bad[1])
        return
    names = [h.strip() for h in header]
    problem = _header_problem(names)
    if problem is not None:
        yield LineProblem(1, problem)
        return
    start = reader.line_num + 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield LineProblem(start, f"malformed CSV: {exc}")
            return  # the reader can not resynchronise after a quoting error
        first, start = start, reader.line_num + 1
        bad = [n for n in range(first, reader.line_num + 1) if n in decoded.bad]
        if bad:
            yield LineProblem(bad[0], decoded.bad[bad[0]])
            continue
        if not record or record == [""]:
            continue  # blank line
        if len(record) != len(names):
            yield LineProblem(
                first, f"expected {len(names)} fields as in the header, got {len(record)}"
            )
            continue
        if types is None:
            doc: dict[str, Any] = {
                n: (v if v != "" else None) for n, v in zip(names, record, strict=True)
            }
        else:
            doc = {n: convert(v, types.get(n)) for n, v in zip(names, record, strict=True)}
        keyed = keyed_row(doc, spec)
        if isinstance(keyed, str):
            yield LineProblem(first, keyed)
            continue
        yield Row(first, keyed)


def _header_problem(names: list[str]) -> str | None:
    if not any(names):
        return "empty header line"
    if "" in names:
        return f"header has an empty column name at position {names.index('') + 1}"
    seen: set[str] = set()
    for n in names:
        if n in seen:
            return f"header repeats the column name {_shown(n)!r}"
        seen.add(n)
    return None


class CsvTypeInference:
    """Accumulates the narrowest type of each column over the checking pass."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.types: dict[str, CsvType | None] = {}

    def observe(self, row: Row) -> None:
        for name, value in row.values.items():
            kind = value_type(value) if isinstance(value, str) else None
            self.types[name] = widen(self.types.get(name), kind)

    def result(self) -> dict[str, CsvType | None]:
        out = dict(self.types)
        # Keys stay text, so '007' and '7' remain two different users.
        for name in (self.spec.primary_key, *self.spec.key_aliases):
            if name in out:
                out[name] = CsvType.TEXT
        return out
