"""`python -m analytics_core.batch.seed_sample CLIENT_ID [--dir DIR]`: drop the sample data.

Copies `samples/landing/` (users and page_views in JSONL, CSV and Parquet; shipped in the
package, see `analytics_core.package_data`) into the client's landing zone, so a batch
load has something to load on a fresh machine.

Where: `--dir` if given (a directory or fsspec URL), else the client's
`clients.batch_source_url`, else `<PIPELINE_STATE_DIR>/landing/<client_id>`. When the
client has no batch source yet, it is set to that place (and audited). Copying again
rewrites identical files: the next load finds their content already loaded.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from importlib.resources.abc import Traversable

import fsspec
import psycopg2

from analytics_core import package_data, pg, registry
from analytics_core.naming import client_id_problem
from analytics_core.settings import Settings, SettingsError


@dataclass(frozen=True)
class Seeded:
    client_id: str
    url: str
    files: list[str]
    source_set: bool  # batch_source_url was empty and now points at `url`
    source_url: str  # the client's batch source after seeding


@dataclass(frozen=True)
class SeedFailed:
    client_id: str
    reason: str


def default_landing_url(settings: Settings, client_id: str) -> str:
    return str(settings.state_dir / "landing" / client_id)


def copy_samples(url: str, samples: Traversable | None = None) -> list[str]:
    """Copy every sample file under `url` (same relative paths); returns those paths."""
    fs, root = fsspec.core.url_to_fs(url)
    root = str(root).rstrip("/")
    copied = []
    for rel, source in package_data.walk_files(samples or package_data.sample_landing()):
        target = f"{root}/{rel}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(target, source.read_bytes())
        copied.append(rel)
    return copied


def _set_source_if_unset(conn: registry.Conn, client_id: str, url: str) -> bool:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE clients SET batch_source_url = %s, updated_at = now()"
            " WHERE client_id = %s AND batch_source_url IS NULL",
            (url, client_id),
        )
        changed = cur.rowcount == 1
    conn.commit()
    return changed


def seed(settings: Settings, client_id: str, target: str | None = None) -> Seeded | SeedFailed:
    problem = client_id_problem(client_id)
    if problem is not None:
        return SeedFailed(client_id, problem)
    conn = pg.connect(settings.postgres)
    try:
        row = registry.get_client(conn, client_id)
        if row is None:
            return SeedFailed(client_id, f"no client {client_id!r} in the registry")
        url = target or row.batch_source_url or default_landing_url(settings, client_id)
        files = copy_samples(url)
        source_set = False
        if not row.batch_source_url:
            source_set = _set_source_if_unset(conn, client_id, url)
            if source_set:
                registry.audit(conn, client_id, "batch_source_set", {"url": url}, actor="cli")
        current = registry.get_client(conn, client_id)
        source_url = (current.batch_source_url if current else None) or url
        return Seeded(client_id, url, files, source_set, source_url)
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analytics_core.batch.seed_sample",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("client_id")
    parser.add_argument("--dir", help="landing zone directory or fsspec URL to copy into")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        outcome = seed(settings, args.client_id, args.dir)
    except psycopg2.OperationalError as exc:
        print(f"cannot reach PostgreSQL: {str(exc).strip()}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write the sample files: {exc}; choose --dir", file=sys.stderr)
        return 1
    if isinstance(outcome, SeedFailed):
        print(f"error: {outcome.reason}", file=sys.stderr)
        return 1
    print(f"copied {len(outcome.files)} sample files into {outcome.url}")
    if outcome.source_set:
        print(f"client {outcome.client_id}: batch_source_url set to {outcome.url}")
    elif outcome.source_url != outcome.url:
        print(
            f"note: client {outcome.client_id} loads from {outcome.source_url}, not {outcome.url}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
