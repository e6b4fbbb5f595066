"""Read one landing file twice: check it completely, then stream its rows (I/O over parsing).

Pass 1 (`check_file`) parses every line, collects up to `MAX_PROBLEMS` problems, counts rows,
infers CSV column types and computes the sha256 of the bytes. Only a file without problems
is streamed by pass 2 (`stream_rows`), which hashes the bytes again: if they differ from
pass 1 (the file was rewritten meanwhile) it raises `FileChangedDuringLoad`, so the load
fails as a whole and nothing of that file is committed; the next run reads it afresh.
Memory: one line (JSONL/CSV) or one Parquet file (held as bytes for random access).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import IO

from analytics_core.batch.formats import FileFormat
from analytics_core.batch.landing_zone import LandingZone
from analytics_core.batch.ledger import ListedFile
from analytics_core.batch.parquet_rows import parse_parquet
from analytics_core.batch.parsing import (
    MAX_PROBLEMS,
    CsvType,
    CsvTypeInference,
    LineProblem,
    ParseItem,
    Row,
    parse_csv,
    parse_jsonl,
)
from analytics_core.batch.tables import TableSpec


class FileChangedDuringLoad(RuntimeError):
    """The file's bytes changed between the check and the load: retry the whole load."""


@dataclass(frozen=True, slots=True)
class Checked:
    sha256: str
    rows: int
    problems: tuple[LineProblem, ...]
    csv_types: dict[str, CsvType | None] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _hashing(lines: Iterable[bytes], digest: hashlib._Hash) -> Iterator[bytes]:
    for line in lines:
        digest.update(line)
        yield line


def _items(
    f: ListedFile,
    spec: TableSpec,
    handle: IO[bytes],
    digest: hashlib._Hash,
    types: dict[str, CsvType | None] | None,
) -> tuple[Iterator[ParseItem], Iterator[bytes]]:
    lines = _hashing(handle, digest)
    if f.fmt is FileFormat.JSONL:
        return parse_jsonl(lines, spec), lines
    if f.fmt is FileFormat.CSV:
        return parse_csv(lines, spec, types), lines
    raise AssertionError(f.fmt)


def _parquet_bytes(zone: LandingZone, f: ListedFile) -> tuple[bytes, str]:
    with zone.open(f) as handle:
        data = handle.read()
    return data, hashlib.sha256(data).hexdigest()


def check_file(zone: LandingZone, f: ListedFile, spec: TableSpec) -> Checked:
    problems: list[LineProblem] = []
    rows = 0
    if f.fmt is FileFormat.PARQUET:
        data, sha = _parquet_bytes(zone, f)
        for item in parse_parquet(io.BytesIO(data), spec):
            if isinstance(item, LineProblem):
                problems.append(item)
                if len(problems) >= MAX_PROBLEMS:
                    break
            else:
                rows += 1
        return Checked(sha, rows, tuple(problems))
    digest = hashlib.sha256()
    inference = CsvTypeInference(spec) if f.fmt is FileFormat.CSV else None
    with zone.open(f) as handle:
        items, lines = _items(f, spec, handle, digest, None)
        for item in items:
            if isinstance(item, LineProblem):
                problems.append(item)
                if len(problems) >= MAX_PROBLEMS:
                    break
            else:
                rows += 1
                if inference is not None:
                    inference.observe(item)
        for _ in lines:  # hash whatever parsing did not read
            pass
    types = inference.result() if inference is not None else None
    return Checked(digest.hexdigest(), rows, tuple(problems), types)


def stream_rows(
    zone: LandingZone, f: ListedFile, spec: TableSpec, checked: Checked, *, chunk: int = 10_000
) -> Iterator[list[Row]]:
    """The rows of a checked file in chunks; raises `FileChangedDuringLoad`."""
    if f.fmt is FileFormat.PARQUET:
        data, sha = _parquet_bytes(zone, f)
        if sha != checked.sha256:
            raise FileChangedDuringLoad(f"{f.path} changed while it was being loaded")
        yield from _chunks(f, parse_parquet(io.BytesIO(data), spec), chunk)
        return
    digest = hashlib.sha256()
    with zone.open(f) as handle:
        items, lines = _items(f, spec, handle, digest, checked.csv_types)
        yield from _chunks(f, items, chunk)
        for _ in lines:
            pass
    if digest.hexdigest() != checked.sha256:
        raise FileChangedDuringLoad(f"{f.path} changed while it was being loaded")


def _chunks(f: ListedFile, items: Iterator[ParseItem], size: int) -> Iterator[list[Row]]:
    while True:
        batch = list(islice(items, size))
        if not batch:
            return
        rows: list[Row] = []
        for item in batch:
            if isinstance(item, LineProblem):
                raise FileChangedDuringLoad(
                    f"{f.path} line {item.line} became invalid while it was being loaded"
                )
            rows.append(item)
        yield rows
