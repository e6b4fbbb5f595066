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

import contextlib
import logging
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg2
import psycopg2.extensions

from analytics_core.circuit_breaker import CircuitBreaker
from analytics_core.settings import PostgresSettings

log = logging.getLogger("analytics.pg")
T = TypeVar("T")


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


@dataclass(frozen=True, slots=True)
class PostgresAway:
    """A lookup did not run or did not finish: PostgreSQL is down, hung or refusing."""

    detail: str
    tried: bool  # False: skipped, the circuit was open


class LookupConnection:
    """One connection for short lookups from one thread, behind a circuit breaker.

    Invariants: the connection is opened on first use and again after a failure (a failed
    connection is closed, never reused); while the breaker is open a lookup answers
    `PostgresAway` at once, so a down or hung server costs the calling thread one bounded
    wait per opening, not one per lookup. A lookup that timed out (`PostgresCallTimeout`)
    opens the circuit at once and for `timeout_hold_s`: each probe of a hung server holds
    the thread for the whole bound. Not thread-safe (one thread: a registry thread, a
    routing loop).
    """

    def __init__(
        self,
        settings: PostgresSettings,
        breaker: CircuitBreaker,
        what: str,
        *,
        timeout_hold_s: float = 5.0,
        connect_timeout_s: int = 2,
    ) -> None:
        self.breaker = breaker
        self._settings = settings
        self._what = what
        self._timeout_hold_s = timeout_hold_s
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg2.extensions.connection | None = None

    def run(self, lookup: Callable[[psycopg2.extensions.connection], T]) -> T | PostgresAway:
        """`lookup(connection)`'s result, or why PostgreSQL could not give it."""
        if not self.breaker.allow():
            return PostgresAway(f"PostgreSQL unavailable ({self._what}): circuit open", False)
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self._settings, timeout_s=self._connect_timeout_s)
            result = lookup(self._conn)
        except psycopg2.Error as exc:
            timed_out = isinstance(exc, PostgresCallTimeout)
            was_closed = self.breaker.opened_at is None
            self.breaker.failed(
                at_once=timed_out, hold_s=self._timeout_hold_s if timed_out else None
            )
            self.close()
            if was_closed and self.breaker.opened_at is not None:
                log.warning(
                    "postgres unavailable for %s: circuit open",
                    self._what,
                    extra={"error": str(exc)},
                )
            return PostgresAway(f"PostgreSQL unavailable ({self._what}): {exc}", True)
        self.breaker.succeeded()
        return result

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
            self._conn = None
