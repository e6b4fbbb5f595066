"""Naming rules for identifiers that reach SQL.

Invariant: every client id and database name that is interpolated into SQL
has passed `validate_client_id` / `validate_identifier` and is quoted by
`quote_identifier`. No other module builds identifiers from user data.
"""

from __future__ import annotations

import re

# Client ids become part of ClickHouse database names and Dagster partition keys:
# lower-case letters, digits, '_' and '-', starting with a letter or digit.
CLIENT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
DATABASE_PREFIX = "client_"


class InvalidIdentifier(ValueError):
    """An identifier does not follow the naming rules; the message says which rule."""


def client_id_problem(client_id: object) -> str | None:
    """Why `client_id` is not a valid client id, or None when it is."""
    if not isinstance(client_id, str):
        return f"client_id must be a string, got {type(client_id).__name__}"
    if not CLIENT_ID_PATTERN.fullmatch(client_id):
        shown = client_id if len(client_id) <= 64 else client_id[:61] + "..."
        return (
            f"client_id {shown!r} is invalid: use 1-48 characters of a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return None


def validate_client_id(client_id: object) -> str:
    problem = client_id_problem(client_id)
    if problem is not None:
        raise InvalidIdentifier(problem)
    assert isinstance(client_id, str)
    return client_id


def database_name_for(client_id: str) -> str:
    """The default ClickHouse database of a client: `client_<id>` with '-' as '_'.

    Two ids may map to the same name ('a-b', 'a_b'); the registry's UNIQUE
    constraint on `ch_database_name` refuses the second one.
    """
    return DATABASE_PREFIX + validate_client_id(client_id).replace("-", "_")


def validate_identifier(name: object) -> str:
    if not isinstance(name, str) or not IDENTIFIER_PATTERN.fullmatch(name):
        raise InvalidIdentifier(
            f"{name!r} is not a valid identifier: use letters, digits and '_', "
            "starting with a letter or '_', at most 64 characters"
        )
    return name


def quote_identifier(name: str) -> str:
    """Back-quoted identifier for ClickHouse SQL; validates first."""
    return f"`{validate_identifier(name)}`"
