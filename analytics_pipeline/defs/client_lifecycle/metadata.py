"""Materialization metadata shown in the UI for a client's database and schema."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dagster import MetadataValue

from analytics_core.registry import AppliedVersion


def tables_metadata(row_counts: Mapping[str, int]) -> dict[str, MetadataValue]:
    lines = ["| table | rows |", "|---|---:|"] + [
        f"| {name} | {rows} |" for name, rows in sorted(row_counts.items())
    ]
    return {
        "tables": MetadataValue.md("\n".join(lines)),
        "table_count": MetadataValue.int(len(row_counts)),
        "events_base_rows": MetadataValue.int(int(row_counts.get("events_base", 0))),
    }


def versions_metadata(applied: Sequence[AppliedVersion]) -> dict[str, MetadataValue]:
    lines = ["| version | name | checksum |", "|---:|---|---|"] + [
        f"| {a.version} | {a.name} | `{a.checksum[:12]}` |" for a in applied
    ]
    return {"schema_versions": MetadataValue.md("\n".join(lines))}
