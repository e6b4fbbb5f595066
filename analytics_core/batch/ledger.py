"""Which landing files were loaded: pure bookkeeping over a JSON-able dict (dlt state).

A file is identified by its path relative to the landing root. Its *fingerprint* (size and
modification time from the listing) lets a run skip an unchanged file without reading it;
its *sha256* decides whether a touched or re-uploaded file has new content. A file whose
content changed is loaded again in full; the merge on the primary key replaces its rows.

State layout (inside the dlt resource state of one table):

    {"files":    {path: {"sha256": str, "fp": str, "rows": int}},
     "rejected": {path: {"sha256": str, "fp": str, "problems": [[line, reason], ...]}}}
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from analytics_core.batch.formats import FileFormat
from analytics_core.batch.parsing import LineProblem


@dataclass(frozen=True, slots=True)
class ListedFile:
    table: str
    path: str  # relative to the landing root, '/'-separated: "page_views/2024-05-01.jsonl"
    location: str  # what the filesystem opens (absolute path or bucket key)
    size: int
    modified: str  # whatever the filesystem reports (mtime, ETag...); "" when unknown
    fmt: FileFormat

    @property
    def fingerprint(self) -> str:
        return f"{self.size}:{self.modified}"


@dataclass(frozen=True, slots=True)
class Rejection:
    sha256: str
    fingerprint: str
    problems: tuple[LineProblem, ...]


@dataclass(frozen=True)
class Triage:
    to_read: list[ListedFile] = field(default_factory=list)
    unchanged: list[ListedFile] = field(default_factory=list)
    still_rejected: list[tuple[ListedFile, Rejection]] = field(default_factory=list)


class Ledger:
    """A view over one table's state dict; mutations write through to it."""

    def __init__(self, state: MutableMapping[str, Any]) -> None:
        self._files: dict[str, dict[str, Any]] = state.setdefault("files", {})
        self._rejected: dict[str, dict[str, Any]] = state.setdefault("rejected", {})

    def is_unchanged(self, f: ListedFile) -> bool:
        entry = self._files.get(f.path)
        return entry is not None and bool(f.modified) and entry.get("fp") == f.fingerprint

    def known_rejection(self, f: ListedFile) -> Rejection | None:
        entry = self._rejected.get(f.path)
        if entry is None or not f.modified or entry.get("fp") != f.fingerprint:
            return None
        problems = tuple(LineProblem(int(n), str(r)) for n, r in entry.get("problems", []))
        return Rejection(str(entry.get("sha256", "")), f.fingerprint, problems)

    def content_loaded(self, f: ListedFile, sha256: str) -> bool:
        entry = self._files.get(f.path)
        return entry is not None and entry.get("sha256") == sha256

    def mark_loaded(self, f: ListedFile, sha256: str, rows: int) -> None:
        self._files[f.path] = {"sha256": sha256, "fp": f.fingerprint, "rows": rows}
        self._rejected.pop(f.path, None)

    def touch(self, f: ListedFile) -> None:
        """Same content under a new fingerprint (re-upload, `touch`): remember the new one."""
        self._files[f.path]["fp"] = f.fingerprint

    def mark_rejected(self, f: ListedFile, sha256: str, problems: Iterable[LineProblem]) -> None:
        self._rejected[f.path] = {
            "sha256": sha256,
            "fp": f.fingerprint,
            "problems": [[p.line, p.reason] for p in problems],
        }

    def loaded_paths(self) -> set[str]:
        return set(self._files)


def triage(files: Iterable[ListedFile], ledger: Ledger) -> Triage:
    """Split a listing into files to read, files known unchanged, and known-bad files."""
    out = Triage()
    for f in sorted(files, key=lambda f: f.path):
        if ledger.is_unchanged(f):
            out.unchanged.append(f)
            continue
        rejection = ledger.known_rejection(f)
        if rejection is not None:
            out.still_rejected.append((f, rejection))
            continue
        out.to_read.append(f)
    return out
