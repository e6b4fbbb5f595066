"""PostgreSQL connections for the metadata database."""

from __future__ import annotations

import psycopg2
import psycopg2.extensions

from analytics_core.settings import PostgresSettings


def connect(
    pg: PostgresSettings, *, dbname: str | None = None, timeout_s: int = 5
) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(pg.dsn(dbname), connect_timeout=timeout_s, application_name="analytics")
    return conn
