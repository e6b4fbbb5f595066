"""Landing file formats, recognised by the file name's suffix (case-insensitive)."""

from __future__ import annotations

from enum import StrEnum


class FileFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"


SUFFIXES: dict[str, FileFormat] = {
    ".jsonl": FileFormat.JSONL,
    ".ndjson": FileFormat.JSONL,
    ".csv": FileFormat.CSV,
    ".parquet": FileFormat.PARQUET,
}


def detect_format(path: str) -> FileFormat | None:
    """The format of `path`, or None for files that are not landing data (README, .tmp...)."""
    name = path.rsplit("/", 1)[-1].lower()
    if name.startswith((".", "_")):
        return None  # hidden files and in-progress uploads (_tmp, .part) are not data
    for suffix, fmt in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None
