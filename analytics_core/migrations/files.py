"""Migration files: naming, checksums and statement splitting (pure, plus one reader).

Version 0 is the base schema `clickhouse/schemas/01_events_base.sql`; later
versions are `clickhouse/migrations/vNNN_<name>.sql` with NNN >= 1. Both ship in the package
(`analytics_core.package_data`); a directory given by the caller replaces the shipped one.
The checksum is sha256 of the file's bytes: any edit to an applied file is
detected and refused by the planner.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources.abc import Traversable

from analytics_core import package_data

BASE_SCHEMA_FILE = "01_events_base.sql"
FILENAME_PATTERN = re.compile(r"^v(\d{3,6})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class MigrationFile:
    version: int
    name: str
    sql: str
    checksum: str


class MigrationFileError(ValueError):
    """A migration file is misnamed or duplicated; the message names the file."""


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_filename(filename: str) -> tuple[int, str]:
    m = FILENAME_PATTERN.fullmatch(filename)
    if not m:
        raise MigrationFileError(
            f"{filename}: migration files must be named vNNN_<name>.sql "
            "(lower-case name, NNN >= 001), e.g. v002_add_session_id.sql"
        )
    version = int(m.group(1))
    if version == 0:
        raise MigrationFileError(f"{filename}: version 0 is reserved for the base schema")
    return version, m.group(2)


def split_statements(sql: str) -> list[str]:
    """Split on ';' outside quotes and comments; empty statements are dropped."""
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    quote: str | None = None
    while i < n:
        c = sql[i]
        if quote:
            buf.append(c)
            if c == "\\" and i + 1 < n:
                buf.append(sql[i + 1])
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in ("'", '"', "`"):
            quote = c
            buf.append(c)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end
            continue
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end == -1 else end + 2
            continue
        elif c == ";":
            statements.append("".join(buf).strip())
            buf = []
        else:
            buf.append(c)
        i += 1
    statements.append("".join(buf).strip())
    return [s for s in statements if s]


def load(
    migrations_dir: Traversable | None = None, base_schema: Traversable | None = None
) -> list[MigrationFile]:
    """The base schema and every migration file, in version order (default: the shipped ones)."""
    base_file = base_schema or package_data.clickhouse_schemas() / BASE_SCHEMA_FILE
    directory = migrations_dir or package_data.clickhouse_migrations()
    base = base_file.read_bytes()
    files = [MigrationFile(0, "base_events", base.decode("utf-8"), checksum(base))]
    seen: dict[int, str] = {}
    for path in package_data.sql_files(directory):
        version, name = parse_filename(path.name)
        if version in seen:
            raise MigrationFileError(
                f"{path.name}: version {version} is also used by {seen[version]}"
            )
        seen[version] = path.name
        data = path.read_bytes()
        files.append(MigrationFile(version, name, data.decode("utf-8"), checksum(data)))
    return sorted(files, key=lambda f: f.version)
