"""PostgreSQL connections for the metadata database, and a time bound on every call.

A server that is stopped refuses connections; a server that hangs (a paused container, a
SIGSTOPped process, a network path that drops packets) accepts them in the kernel and then
never answers. libpq has no read timeout, so without a bound one query on an established
connection blocks its thread for good: in the router or the capture service that is every
tenant's traffic. `bound_every_call` makes every blocking libpq step of the process
(connecting, each execute, commit) give up after `timeout_s` with `PostgresCallTimeout`;
psycopg2 then closes that connection, and the callers' usual "PostgreSQL unavailable"
path takes over (circuit breakers, last known values, retry later).
"""

from __future__ import annotations

import select
import time

import psycopg2
import psycopg2.extensions

from analytics_core.settings import PostgresSettings


class PostgresCallTimeout(psycopg2.OperationalError):
    """PostgreSQL did not answer one call within the process's bound."""


def connect(
    pg: PostgresSettings, *, dbname: str | None = None, timeout_s: int = 5
) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(pg.dsn(dbname), connect_timeout=timeout_s, application_name="analytics")
    return conn


def bound_every_call(timeout_s: float) -> None:
    """From now on, no psycopg2 call of this process waits for PostgreSQL longer than
    `timeout_s` (process-wide: psycopg2 has one wait callback). For services whose every
    query is a short lookup; not for processes running long statements (migrations)."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, not {timeout_s}")

    def wait(conn: psycopg2.extensions.connection) -> None:
        wait_within(conn, timeout_s)

    psycopg2.extensions.set_wait_callback(wait)


def wait_within(conn: psycopg2.extensions.connection, timeout_s: float) -> None:
    """psycopg2's wait callback: drive `conn` until its operation completes, or raise
    `PostgresCallTimeout` once `timeout_s` has passed (psycopg2 then closes `conn`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise PostgresCallTimeout(f"PostgreSQL did not answer within {timeout_s:g} s")
        if state == psycopg2.extensions.POLL_READ:
            events = select.POLLIN
        elif state == psycopg2.extensions.POLL_WRITE:
            events = select.POLLOUT
        else:
            raise psycopg2.OperationalError(f"unexpected state {state} from connection.poll()")
        poller = select.poll()  # not select(): descriptors above 1023 are common in services
        poller.register(conn.fileno(), events)
        poller.poll(max(1, int(left * 1000)))
