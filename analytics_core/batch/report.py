"""What one client load did, per table: files consumed, rejected, unchanged (pure).

Filled while dlt extracts (the resources append to it) and read afterwards to build
materialization metadata and the `batch_files` log. Counts reconcile: every listed data
file is exactly one of consumed, already loaded (same content), unchanged, or rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analytics_core.batch.parsing import LineProblem


@dataclass(frozen=True, slots=True)
class FileConsumed:
    path: str
    sha256: str
    rows: int


@dataclass(frozen=True, slots=True)
class FileRejected:
    path: str
    sha256: str
    problems: tuple[LineProblem, ...]
    known: bool  # rejected by an earlier run and unchanged since (re-reported, not re-read)

    def describe(self) -> str:
        first = self.problems[0] if self.problems else LineProblem(0, "unknown problem")
        where = f"line {first.line}" if first.line else "file"
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"{self.path}: {where}: {first.reason}{more}"


@dataclass
class TableReport:
    table: str
    consumed: list[FileConsumed] = field(default_factory=list)
    rejected: list[FileRejected] = field(default_factory=list)
    already_loaded: list[str] = field(default_factory=list)  # re-uploaded, same sha256
    unchanged: int = 0
    ignored: list[str] = field(default_factory=list)  # not a data file (README, .tmp...)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.consumed)

    def metadata(self) -> dict[str, Any]:
        return {
            "rows_loaded": self.rows,
            "files_consumed": [f.path for f in self.consumed],
            "files_rejected": [r.describe() for r in self.rejected],
            "files_unchanged": self.unchanged + len(self.already_loaded),
            "files_ignored": self.ignored,
        }


@dataclass
class LoadReport:
    tables: dict[str, TableReport] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def table(self, name: str) -> TableReport:
        return self.tables.setdefault(name, TableReport(name))

    @property
    def rows(self) -> dict[str, int]:
        return {name: t.rows for name, t in self.tables.items()}

    @property
    def rejected(self) -> list[FileRejected]:
        return [r for t in self.tables.values() for r in t.rejected]
