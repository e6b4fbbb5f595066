"""Client registry in PostgreSQL (tables `clients`, `schema_versions`, `client_audit_log`).

All SQL here is parameterised; no identifier is built from user data.
Functions take an open connection and commit their own write, so each
lifecycle step is durable when the function returns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib.resources.abc import Traversable
from typing import Any

import psycopg2.extensions

from analytics_core import package_data
from analytics_core.clients import ClientRecord, ClientStatus

Conn = psycopg2.extensions.connection


def metadata_files(directory: Traversable | None = None) -> list[Traversable]:
    """The registry schema files (`postgres/sql/*.sql`, shipped in the package) in name order."""
    return package_data.sql_files(directory or package_data.postgres_metadata())


def apply_metadata_schema(conn: Conn, directory: Traversable | None = None) -> list[str]:
    """Apply every postgres/sql file in name order; each is idempotent."""
    applied = []
    with conn.cursor() as cur:
        # Serialises concurrent bootstraps (router + dagster starting together).
        cur.execute("SELECT pg_advisory_xact_lock(7424001)")
        for path in metadata_files(directory):
            cur.execute(path.read_text(encoding="utf-8"))
            applied.append(path.name)
    conn.commit()
    return applied


@dataclass(frozen=True)
class ClientRow:
    """A full registry row (the record plus bookkeeping) for operators and Dagster."""

    client_id: str
    name: str
    status: str
    status_detail: str | None
    api_key_hash: str
    ch_database_name: str | None
    batch_source_url: str | None
    created_at: datetime
    updated_at: datetime
    ch_target: str = "default"  # the ClickHouse target holding the database (placement)

    def record(self) -> ClientRecord | None:
        """The routing view; None when the row can not be routed (unknown status, no db)."""
        try:
            status = ClientStatus(self.status)
        except ValueError:
            return None
        return ClientRecord(
            self.client_id, status, self.api_key_hash, self.ch_database_name or "", self.ch_target
        )


_COLUMNS = (
    "client_id, name, status, status_detail, api_key_hash, ch_database_name, "
    "batch_source_url, created_at, updated_at, ch_target"
)


def get_client(conn: Conn, client_id: str) -> ClientRow | None:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM clients WHERE client_id = %s", (client_id,))
        row = cur.fetchone()
    conn.commit()
    return ClientRow(*row) if row else None


def get_clients(conn: Conn, client_ids: Sequence[str]) -> dict[str, ClientRow]:
    """The rows of those of the clients that exist, in one query."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM clients WHERE client_id = ANY(%s)", (list(client_ids),)
        )
        rows = [ClientRow(*r) for r in cur.fetchall()]
    conn.commit()
    return {row.client_id: row for row in rows}


def list_clients(conn: Conn, statuses: Iterable[ClientStatus] | None = None) -> list[ClientRow]:
    with conn.cursor() as cur:
        if statuses is None:
            cur.execute(f"SELECT {_COLUMNS} FROM clients ORDER BY client_id")
        else:
            cur.execute(
                f"SELECT {_COLUMNS} FROM clients WHERE status = ANY(%s) ORDER BY client_id",
                ([s.value for s in statuses],),
            )
        rows = cur.fetchall()
    conn.commit()
    return [ClientRow(*r) for r in rows]


def add_client(
    conn: Conn,
    client_id: str,
    api_key_hash: str,
    *,
    name: str = "",
    status: ClientStatus = ClientStatus.PENDING,
    ch_database_name: str | None = None,
    batch_source_url: str | None = None,
    ch_target: str = "default",
) -> bool:
    """Insert a client placed on `ch_target` (analytics_core.placement chooses it); False when
    it already exists (idempotent seed: the existing row, its target included, is kept)."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO clients (client_id, name, status, api_key_hash, ch_database_name,"
            " batch_source_url, ch_target) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (client_id) DO NOTHING",
            (
                client_id,
                name,
                status.value,
                api_key_hash,
                ch_database_name,
                batch_source_url,
                ch_target,
            ),
        )
        inserted = cur.rowcount == 1
    conn.commit()
    return inserted


def clients_per_target(conn: Conn) -> dict[str, int]:
    """How many clients each target holds (deprovisioned ones excluded): placement's input."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT ch_target, count(*) FROM clients WHERE status <> %s GROUP BY ch_target",
            (ClientStatus.DEPROVISIONED.value,),
        )
        rows = cur.fetchall()
    conn.commit()
    return {str(t): int(n) for t, n in rows}


# Session-level advisory locks on (class, hashtext(client_id)): one lifecycle step or client
# move works on a client at a time, whichever process runs it (Dagster run, CLI). A killed
# process loses its session, and with it the lock.
_CLIENT_LOCK_CLASS = 7424002


@contextmanager
def client_lock(conn: Conn, client_id: str) -> Iterator[bool]:
    """Try to take the client's lock on this connection; yields whether it was taken (never
    waits: the caller reports the client as busy). Released on exit."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_CLIENT_LOCK_CLASS, client_id)
        )
        row = cur.fetchone()
    conn.commit()
    taken = bool(row and row[0])
    try:
        yield taken
    finally:
        if taken and not conn.closed:
            conn.rollback()  # a failed statement must not keep the unlock from running
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_advisory_unlock(%s, hashtext(%s))", (_CLIENT_LOCK_CLASS, client_id)
                )
            conn.commit()


def set_status(
    conn: Conn,
    client_id: str,
    status: ClientStatus,
    detail: str | None = None,
    *,
    ch_database_name: str | None = None,
) -> None:
    stamp = {
        ClientStatus.ACTIVE: ", provisioned_at = COALESCE(provisioned_at, now())",
        ClientStatus.DEPROVISIONED: ", deprovisioned_at = now()",
    }.get(status, "")
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE clients SET status = %s, status_detail = %s, updated_at = now(),"
            " ch_database_name = COALESCE(%s, ch_database_name)" + stamp + " WHERE client_id = %s",
            (status.value, detail, ch_database_name, client_id),
        )
    conn.commit()


def set_api_key_hash(conn: Conn, client_id: str, api_key_hash: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE clients SET api_key_hash = %s, updated_at = now() WHERE client_id = %s",
            (api_key_hash, client_id),
        )
    conn.commit()


@dataclass(frozen=True)
class AppliedVersion:
    version: int
    name: str
    checksum: str


def applied_versions(conn: Conn, client_id: str) -> list[AppliedVersion]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT version, name, checksum FROM schema_versions WHERE client_id = %s"
            " ORDER BY version",
            (client_id,),
        )
        rows = cur.fetchall()
    conn.commit()
    return [AppliedVersion(*r) for r in rows]


def record_schema_version(
    conn: Conn, client_id: str, version: int, name: str, checksum: str, run_id: str | None
) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO schema_versions (client_id, version, name, checksum, dagster_run_id)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (client_id, version) DO NOTHING",
            (client_id, version, name, checksum, run_id),
        )
    conn.commit()


def audit(
    conn: Conn,
    client_id: str,
    action: str,
    detail: dict[str, Any] | None = None,
    *,
    run_id: str | None = None,
    actor: str = "system",
) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO client_audit_log (client_id, action, detail, dagster_run_id, actor)"
            " VALUES (%s, %s, %s::jsonb, %s, %s)",
            (client_id, action, json.dumps(detail or {}, default=str), run_id, actor),
        )
    conn.commit()
