"""A client's landing zone on any fsspec filesystem: list table files and open them (I/O)."""

from __future__ import annotations

from typing import IO, Any

import fsspec

from analytics_core.batch.formats import detect_format
from analytics_core.batch.ledger import ListedFile

# Listing keys that change when an object is rewritten, by filesystem (local, s3, gcs, az...).
_VERSION_KEYS = ("mtime", "LastModified", "last_modified", "updated", "ETag", "etag", "md5Hash")


class LandingZone:
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.fs = fs
        self.root = str(root).rstrip("/")

    def exists(self) -> bool:
        return bool(self.fs.exists(self.root))

    def list_table(self, table: str) -> tuple[list[ListedFile], list[str]]:
        """Data files under `<root>/<table>/` (recursive), and the names it ignored."""
        base = f"{self.root}/{table}"
        if not self.fs.exists(base):
            return [], []
        found: dict[str, dict[str, Any]] = self.fs.find(base, detail=True)
        files: list[ListedFile] = []
        ignored: list[str] = []
        for location, info in found.items():
            if info.get("type", "file") != "file":
                continue
            rel = self._relative(str(location))
            fmt = detect_format(rel)
            if fmt is None:
                ignored.append(rel)
                continue
            files.append(
                ListedFile(
                    table=table,
                    path=rel,
                    location=str(location),
                    size=int(info.get("size") or 0),
                    modified=_version_of(info),
                    fmt=fmt,
                )
            )
        return sorted(files, key=lambda f: f.path), sorted(ignored)

    def open(self, f: ListedFile) -> IO[bytes]:
        handle: IO[bytes] = self.fs.open(f.location, "rb")
        return handle

    def _relative(self, location: str) -> str:
        stripped = location.split("://", 1)[-1]
        root = self.root.split("://", 1)[-1]
        if stripped.startswith(root + "/"):
            return stripped[len(root) + 1 :]
        return stripped.lstrip("/")


def _version_of(info: dict[str, Any]) -> str:
    for key in _VERSION_KEYS:
        value = info.get(key)
        if value not in (None, ""):
            return str(value)
    return ""
