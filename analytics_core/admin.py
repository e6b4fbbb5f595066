"""`python -m analytics_core.admin`: operator commands for the metadata registry.

migrate-metadata           apply postgres/sql/*.sql (idempotent)
add-client ID [--target T] register a client (pending by default) on a ClickHouse target
                           (default: the target with the fewest clients), prints its API key
targets                    the configured ClickHouse targets and how many clients each holds
move-client ID --to T      move a client's database to another target (resumable; same code
                           as the Dagster job move_client); --abandon gives up an unfinished
                           move that has not switched yet
seed-demo                  register the demo client `demo` with a known key (idempotent)
provision ID               provision a client without Dagster (same code as the sensor's run)
deprovision ID --confirm ID   drop a client's database (same guarded code as the Dagster job)
list-clients               one line per client
rotate-key ID              set a new API key, invalidating the router cache
invalidate ID              drop a client's router cache entry now
set-quota ID [--events-per-s R] [--burst N] [--default]
                           a client's capture quota (options left out keep their value)
check-migrations [--dir D] check ClickHouse migration files before they ship: names,
                           versions, and that a run interrupted mid-file can apply the file
                           again (no server)

An API key may start with '-' (`--api-key -x...` works, as does `--api-key=-x...`).
Exit codes: 0 done, 1 failed (or nothing to do), 2 refused (bad arguments, no confirmation).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg2

from analytics_core import cli_values, lifecycle, pg, quotas, registry
from analytics_core.cli_values import INT32_MAX
from analytics_core.client_uniqueness import database_clash, key_clash
from analytics_core.clients import ClientStatus
from analytics_core.connections import open_connections
from analytics_core.event_contract import MAX_TEXT, hash_api_key
from analytics_core.migrations import files as migration_files
from analytics_core.migrations.rerunnable import rerun_problem
from analytics_core.moves import cli as moves_cli
from analytics_core.naming import client_id_problem
from analytics_core.placement import Placed, PlacementRefused, place
from analytics_core.settings import Settings, SettingsError

DEMO_CLIENT = "demo"
DEMO_API_KEY = "demo-key-change-me"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analytics_core.admin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate-metadata", help="apply postgres/sql/*.sql (idempotent)")
    add = sub.add_parser("add-client", help="register a client")
    add.add_argument("client_id")
    add.add_argument("--name", default="")
    add.add_argument("--api-key", help="plain API key (default: a new random one)")
    add.add_argument(
        "--status",
        choices=[ClientStatus.PENDING.value],
        default=ClientStatus.PENDING.value,
        help="a new client is pending: provisioning (Dagster's sensor, or `provision`) creates"
        " its database and makes it active",
    )
    add.add_argument("--batch-source", help="landing-zone directory or fsspec URL for batch loads")
    add.add_argument(
        "--target",
        help="ClickHouse target for its database (default: the one with the fewest clients)",
    )
    sub.add_parser("seed-demo", help=f"register client {DEMO_CLIENT!r} (pending) with a known key")
    prov = sub.add_parser("provision", help="provision a client now (without Dagster)")
    prov.add_argument("client_id")
    dep = sub.add_parser(
        "deprovision",
        help="drop a client's ClickHouse database and mark it deprovisioned (irreversible)",
    )
    dep.add_argument("client_id")
    dep.add_argument(
        "--confirm", required=True, help="the same client id again: nothing happens otherwise"
    )
    dep.add_argument("--requested-by", default="", help="who asks (recorded in the audit log)")
    sub.add_parser("list-clients", help="list clients")
    rot = sub.add_parser("rotate-key", help="give a client a new API key")
    rot.add_argument("client_id")
    rot.add_argument("--api-key", help="new plain key (default: random)")
    inv = sub.add_parser("invalidate", help="drop a client's cache entry")
    inv.add_argument("client_id")
    quota = sub.add_parser(
        "set-quota",
        help="set a client's capture quota (token bucket: events/s and burst)",
        description="Options left out keep their stored value; --default clears both, so the "
        "capture service's defaults (CAPTURE_QUOTA_EVENTS_PER_S, CAPTURE_QUOTA_BURST) apply.",
    )
    quota.add_argument("client_id")
    quota.add_argument(
        "--events-per-s", type=cli_values.above_zero(), help="refill rate, events per second (> 0)"
    )
    quota.add_argument(
        "--burst", type=cli_values.whole(1), help=f"bucket capacity, events (1-{INT32_MAX})"
    )
    quota.add_argument("--default", action="store_true", help="use the service defaults")
    moves_cli.add_parsers(sub)
    check = sub.add_parser(
        "check-migrations",
        help="check migration files (names, versions, safe to re-apply); no server",
    )
    check.add_argument(
        "--dir",
        type=Path,
        help="folder of vNNN_<name>.sql files (default: the migrations shipped in the package)",
    )
    return p


def _add(
    settings: Settings,
    client_id: str,
    api_key: str,
    status: str,
    name: str,
    batch_source: str | None,
    target: str | None = None,
) -> Placed | PlacementRefused | registry.ClientRow | None:
    """Register the client where the placement policy puts it; the existing row (None if it
    was added meanwhile) when it exists already."""
    conn = pg.connect(settings.postgres)
    try:
        registry.apply_metadata_schema(conn)
        rows = registry.list_clients(conn)
        existing = next((row for row in rows if row.client_id == client_id), None)
        if existing is None:
            clash = database_clash(client_id, rows) or key_clash(
                client_id, hash_api_key(api_key), rows
            )
            if clash is not None:
                return PlacementRefused(clash)
        placed = place(
            list(settings.clickhouse_targets()), registry.clients_per_target(conn), target
        )
        if isinstance(placed, PlacementRefused):
            return placed
        added = registry.add_client(
            conn,
            client_id,
            hash_api_key(api_key),
            name=name,
            status=ClientStatus(status),
            batch_source_url=batch_source,
            ch_target=placed.target,
        )
        if added:
            registry.audit(
                conn, client_id, "placed", {"target": placed.target, "why": placed.why}, actor="cli"
            )
        return placed if added else existing
    finally:
        conn.close()


KEY_OPTIONS = frozenset({"--api-key"})


def _glue_key_values(argv: list[str]) -> list[str]:
    """`--api-key -abc` -> `--api-key=-abc`: argparse would take a key starting with '-'
    for an option and refuse it; keys are random text and may start with anything."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in KEY_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _key_problem(key: str | None) -> str | None:
    if key is not None and not 0 < len(key) <= MAX_TEXT:
        return f"--api-key must be 1 to {MAX_TEXT} characters (events carry it as api_key)"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_glue_key_values(sys.argv[1:] if argv is None else argv))
    if args.command == "check-migrations":  # reads files only: no settings, no server
        return _check_migrations(args.dir)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(args, settings)
    except BrokenPipeError:
        # The reader left (`list-clients | head`): nothing more to say, and no traceback
        # when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except psycopg2.OperationalError as exc:
        print(
            f"cannot reach PostgreSQL at {settings.postgres.host}:{settings.postgres.port}: "
            f"{str(exc).strip()}\nstart the local stack (python -m devstack up) or set POSTGRES_*",
            file=sys.stderr,
        )
        return 1


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command in NAMES_A_CLIENT:
        problem = client_id_problem(args.client_id) or _key_problem(getattr(args, "api_key", None))
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    return COMMANDS[args.command](settings, args)


def _check_migrations(directory: Path | None) -> int:
    """Every file's name and version, and whether a run interrupted in it could apply it
    again (`rerunnable.rerun_problem`)."""
    if directory is not None and not directory.is_dir():
        print(f"error: --dir {directory}: not a folder", file=sys.stderr)
        return 2
    try:
        found = migration_files.load(directory)
    except (migration_files.MigrationFileError, UnicodeDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bad = 0
    for m in found:
        problem = rerun_problem(m.sql)
        label = "base schema" if m.version == 0 else f"v{m.version:03d} {m.name}"
        if problem is None:
            print(f"ok    {label}")
        else:
            bad += 1
            print(f"error {label}: {problem}")
    print(f"{len(found) - bad} of {len(found)} file(s) can be applied (and re-applied)")
    missing = sorted(set(range(1, found[-1].version + 1)) - {m.version for m in found})
    if missing:
        names = ", ".join(f"v{v:03d}" for v in missing)
        print(
            f"error: no file for {names}: deleted or misnumbered? New clients would get the "
            "later files without it"
        )
    return 1 if bad or missing else 0


def _migrate_metadata(settings: Settings, _args: argparse.Namespace) -> int:
    conn = pg.connect(settings.postgres)
    try:
        applied = registry.apply_metadata_schema(conn)
    finally:
        conn.close()
    print("metadata schema up to date: " + ", ".join(applied))
    return 0


def _targets(settings: Settings, _args: argparse.Namespace) -> int:
    return moves_cli.run_targets(settings)


def _add_client(settings: Settings, args: argparse.Namespace) -> int:
    key = args.api_key or secrets.token_urlsafe(24)
    placed = _add(
        settings, args.client_id, key, args.status, args.name, args.batch_source, args.target
    )
    if isinstance(placed, PlacementRefused):
        print(f"error: {placed.reason}", file=sys.stderr)
        return 2
    if isinstance(placed, Placed):
        print(
            f"client {args.client_id} added ({args.status}) on ClickHouse target "
            f"{placed.target} ({placed.why}); API key: {key}"
        )
        return 0
    hint = _reuse_hint(placed)
    print(f"client {args.client_id} already exists; nothing changed{hint}", file=sys.stderr)
    return 1


def _reuse_hint(row: registry.ClientRow | None) -> str:
    """What to do when an existing id was asked for again: ids are never reused (its
    audit log, dead letters and replays name it)."""
    if row is None or row.status != ClientStatus.DEPROVISIONED:
        return ""
    return " (it was deprovisioned; a client id is never reused: choose another one)"


def _seed_demo(settings: Settings, _args: argparse.Namespace) -> int:
    added = _add(settings, DEMO_CLIENT, DEMO_API_KEY, "pending", "Demo app", None)
    if isinstance(added, PlacementRefused):
        print(f"error: {added.reason}", file=sys.stderr)
        return 2
    state = "added (pending)" if isinstance(added, Placed) else "already present"
    print(f"demo client {DEMO_CLIENT!r} {state}; API key: {DEMO_API_KEY}")
    return 0


def _provision(settings: Settings, args: argparse.Namespace) -> int:
    with open_connections(settings) as connections:
        outcome = lifecycle.provision(connections, args.client_id, run_id=None)
    if isinstance(outcome, lifecycle.StepFailed):
        print(f"provisioning failed: {outcome.reason}", file=sys.stderr)
        return 2 if outcome.refused else 1
    print(
        f"client {args.client_id} active in database {outcome.database} on ClickHouse "
        f"target {outcome.target}, schema version {outcome.schema_version}"
    )
    return 0


def _list_clients(settings: Settings, _args: argparse.Namespace) -> int:
    conn = pg.connect(settings.postgres)
    try:
        print(f"{'CLIENT':<48} {'STATUS':<15} {'TARGET':<10} {'DATABASE':<55} NAME / DETAIL")
        for row in registry.list_clients(conn):
            print(
                f"{row.client_id:<48} {row.status:<15} {row.ch_target:<10}"
                f" {row.ch_database_name or '-':<55} {row.name}"
                + (f" / {row.status_detail}" if row.status_detail else "")
            )
    finally:
        conn.close()
    return 0


def _rotate_key(settings: Settings, args: argparse.Namespace) -> int:
    key = args.api_key or secrets.token_urlsafe(24)
    conn = pg.connect(settings.postgres)
    try:
        row = registry.get_client(conn, args.client_id)
        if row is None:
            print(f"error: no client {args.client_id!r}", file=sys.stderr)
            return 1
        if row.status == ClientStatus.DEPROVISIONED:
            print(
                f"error: client {args.client_id!r} is deprovisioned: it takes no events, and "
                "no key of its own",
                file=sys.stderr,
            )
            return 2
        clash = key_clash(args.client_id, hash_api_key(key), registry.list_clients(conn))
        if clash is not None:
            print(f"error: {clash}", file=sys.stderr)
            return 2
        registry.set_api_key_hash(conn, args.client_id, hash_api_key(key))
        registry.audit(conn, args.client_id, "key_rotated", actor="cli")
    finally:
        conn.close()
    lifecycle.invalidate_cache(settings, args.client_id)
    print(f"client {args.client_id}: new API key: {key}")
    return 0


def _invalidate(settings: Settings, args: argparse.Namespace) -> int:
    lifecycle.invalidate_cache(settings, args.client_id)
    print(f"cache entry of {args.client_id} invalidated")
    return 0


def _set_quota(settings: Settings, args: argparse.Namespace) -> int:
    if args.default and (args.events_per_s is not None or args.burst is not None):
        print("error: --default clears both values; give it alone", file=sys.stderr)
        return 2
    if not args.default and args.events_per_s is None and args.burst is None:
        print("error: give --events-per-s, --burst or --default", file=sys.stderr)
        return 2
    conn = pg.connect(settings.postgres)
    try:
        stored = quotas.get_quota(conn, args.client_id)
        if stored is None:
            print(f"error: no client {args.client_id!r}", file=sys.stderr)
            return 1
        rate, burst = stored.events_per_s, stored.burst
        if args.default:
            rate = burst = None
        if args.events_per_s is not None:
            rate = args.events_per_s
        if args.burst is not None:
            burst = args.burst
        try:
            quotas.set_quota(conn, args.client_id, rate, burst)
        except quotas.QuotaError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        registry.audit(
            conn,
            args.client_id,
            "quota_set",
            actor="cli",
            detail={"events_per_s": rate, "burst": burst},
        )
    finally:
        conn.close()
    shown_rate = "default" if rate is None else f"{rate:g}"
    shown_burst = "default" if burst is None else str(burst)
    print(
        f"{args.client_id}: {shown_rate} events/s, burst {shown_burst} "
        "(capture applies it within CAPTURE_QUOTA_CACHE_S)"
    )
    return 0


def _deprovision(settings: Settings, args: argparse.Namespace) -> int:
    """The Dagster job's guarded path (`lifecycle.deprovision`): the confirmation must repeat
    the id, a refusal changes nothing but leaves an audit row, a re-run is a no-op."""
    client_id = args.client_id
    actor = args.requested_by.strip()[:200] or "cli"
    with open_connections(settings) as connections:
        outcome = lifecycle.deprovision(connections, client_id, args.confirm, actor=actor)
    if isinstance(outcome, lifecycle.StepFailed):
        print(f"deprovisioning refused or failed: {outcome.reason}", file=sys.stderr)
        return 2 if outcome.refused else 1
    already = " (it was already deprovisioned)" if outcome.already else ""
    print(
        f"client {client_id} deprovisioned; database {outcome.database} dropped{already}; "
        f"rows before: {outcome.rows_before or 'none'}. Its Dagster partition, if any, is "
        "removed by the deprovision_client job or in the UI."
    )
    return 0


def _move_client(settings: Settings, args: argparse.Namespace) -> int:
    return moves_cli.run_move(settings, args)


Command = Callable[[Settings, argparse.Namespace], int]

# One handler per sub-command of `build_parser` (a unit test keeps both lists the same).
COMMANDS: dict[str, Command] = {
    "migrate-metadata": _migrate_metadata,
    "targets": _targets,
    "add-client": _add_client,
    "seed-demo": _seed_demo,
    "provision": _provision,
    "deprovision": _deprovision,
    "list-clients": _list_clients,
    "rotate-key": _rotate_key,
    "invalidate": _invalidate,
    "set-quota": _set_quota,
    "move-client": _move_client,
    # Also dispatched before settings are read (main): it reads files only.
    "check-migrations": lambda _settings, args: _check_migrations(args.dir),
}

# Commands that name a client: its id (and a given --api-key) is checked before anything runs.
NAMES_A_CLIENT = frozenset(
    {
        "add-client",
        "provision",
        "deprovision",
        "rotate-key",
        "invalidate",
        "set-quota",
        "move-client",
    }
)

if __name__ == "__main__":
    sys.exit(main())
