"""What a new client or a new key would share with an existing client (pure).

Two clients must never share an API key (capture finds a client by its key alone, and
refuses a key that names several: both would stop) nor a ClickHouse database name (ids
'a-b' and 'a_b' both name `client_a_b`; the registry's UNIQUE constraint would only refuse
the second at provisioning, after its migrations ran in the first one's database).
"""

from __future__ import annotations

from collections.abc import Iterable

from analytics_core.naming import database_name_for
from analytics_core.registry import ClientRow


def database_clash(client_id: str, rows: Iterable[ClientRow]) -> str | None:
    """Why `client_id` may not be added: another client has (or would get) its database."""
    database = database_name_for(client_id)
    for row in rows:
        if row.client_id == client_id:
            continue
        theirs = row.ch_database_name or database_name_for(row.client_id)
        if theirs == database:
            return (
                f"client {row.client_id!r} already has ClickHouse database {database}, the one "
                f"{client_id!r} would get ('-' and '_' name the same database): choose another id"
            )
    return None


def key_clash(client_id: str, api_key_hash: str, rows: Iterable[ClientRow]) -> str | None:
    """Why the key may not be given to `client_id`: another client holds it."""
    for row in rows:
        if row.client_id != client_id and row.api_key_hash == api_key_hash:
            return (
                f"client {row.client_id!r} already uses this API key; give each client its "
                "own key (omit --api-key for a random one)"
            )
    return None
