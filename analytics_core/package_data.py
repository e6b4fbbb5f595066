"""Files the installed package carries, found with `importlib.resources`, never by a path
relative to the source tree.

In the repository they live where users edit them: `clickhouse/` (schemas, migrations, ops),
`postgres/sql/`, `samples/landing/` and `analytics_core/contract/`. Relative symlinks put the
first three inside the package (`analytics_core/sql/clickhouse`, `analytics_core/sql/postgres`,
`analytics_core/batch/samples`), so:
- an editable install (`pip install -e`, the dev setup) reads the user's folders through the
  links: a new migration file is seen at once;
- a wheel carries real copies (`[tool.setuptools.package-data]` in pyproject.toml follows the
  links), so an installed package (a container image) has its schemas without the repository.

Invariant: every function returns a `Traversable`; callers read it with `read_bytes`/`iterdir`
(no `glob`, no `Path` methods), so the same code works from a directory or a zip.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

CORE = "analytics_core"


def _core() -> Traversable:
    return files(CORE)


def clickhouse_schemas() -> Traversable:
    """`clickhouse/schemas/`: the base schema of every client database (version 0)."""
    return _core() / "sql" / "clickhouse" / "schemas"


def clickhouse_migrations() -> Traversable:
    """`clickhouse/migrations/`: the versioned migrations `vNNN_<name>.sql`."""
    return _core() / "sql" / "clickhouse" / "migrations"


def clickhouse_ops() -> Traversable:
    """`clickhouse/ops/`: the shared operations database (router accounting)."""
    return _core() / "sql" / "clickhouse" / "ops"


def postgres_metadata() -> Traversable:
    """`postgres/sql/`: the registry schema, applied in name order."""
    return _core() / "sql" / "postgres"


def event_schema() -> Traversable:
    """`analytics_core/contract/event-v1.schema.json`: the event contract as JSON Schema."""
    return _core() / "contract" / "event-v1.schema.json"


def sample_landing() -> Traversable:
    """`samples/landing/`: the sample batch data (`users/`, `page_views/`)."""
    return _core() / "batch" / "samples"


def sql_files(directory: Traversable) -> list[Traversable]:
    """The `*.sql` files of a directory, in name order (the order they are applied in)."""
    if not directory.is_dir():
        return []
    return sorted(
        (p for p in directory.iterdir() if p.is_file() and p.name.endswith(".sql")),
        key=lambda p: p.name,
    )


def walk_files(directory: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    """Every file under `directory` as (relative posix path, file), sorted by path."""
    found: list[tuple[str, Traversable]] = []
    for entry in directory.iterdir():
        rel = f"{prefix}{entry.name}"
        if entry.is_dir():
            found.extend(walk_files(entry, rel + "/"))
        elif entry.is_file():
            found.append((rel, entry))
    return sorted(found, key=lambda item: item[0])
