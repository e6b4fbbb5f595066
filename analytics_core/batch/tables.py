"""The landing tables: where their files live, their primary key, and lineage columns.

Invariant: every row handed to dlt carries its primary key as a non-empty string under
`TableSpec.primary_key` and the three lineage columns; the merge on that key is what makes
re-runs, changed files and backfills idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

# Lineage columns added to every loaded row.
SOURCE_FILE = "_source_file"  # path of the landing file, relative to the landing root
SOURCE_LINE = "_source_line"  # 1-based line (JSONL/CSV, header = line 1) or row (Parquet)
# Orders duplicates of one key inside a load: the later file (by path), then the later line,
# wins. dlt deduplicates the staging data on it (`dedup_sort`) before merging.
SOURCE_SEQ = "_source_seq"
LINE_BITS = 32


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str  # dlt resource = ClickHouse table = landing sub-directory
    primary_key: str
    # Fields accepted as the key when `primary_key` is absent (renamed to it).
    key_aliases: tuple[str, ...] = ()


USERS = TableSpec("users", "user_id")
PAGE_VIEWS = TableSpec("page_views", "page_view_id", key_aliases=("event_id",))
TABLES: tuple[TableSpec, ...] = (USERS, PAGE_VIEWS)


def table_spec(name: str) -> TableSpec:
    for spec in TABLES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown landing table {name!r}; known: {', '.join(t.name for t in TABLES)}")


def source_seq(file_rank: int, line: int) -> int:
    """A sortable number for (file order in this load, line): bigger = later = wins."""
    return (file_rank << LINE_BITS) | (line & ((1 << LINE_BITS) - 1))


# dlt's own tables in a client database: its state and load log (`_dlt_*`), the staging
# copies it merges from (`_staging___*`), and the sentinel it creates to probe the
# destination. They are bookkeeping, not the client's data: row counts leave them out.
DLT_INTERNAL_PREFIXES = ("_dlt_", "_staging_")
DLT_SENTINEL_TABLE = "dlt_sentinel_table"


def is_dlt_internal(table: str) -> bool:
    return table.startswith(DLT_INTERNAL_PREFIXES) or table == DLT_SENTINEL_TABLE
