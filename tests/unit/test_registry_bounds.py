"""A hung registry costs a bounded wait: PostgreSQL calls give up (pg.wait_within), a
timed-out call opens the circuit at once, and capture's requests wait for a late lookup at
most the registry wait (last verdict or quota kept; unseen keys get 'unavailable')."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import psycopg2.extensions
import pytest

from analytics_core import pg
from analytics_core.circuit_breaker import CircuitBreaker
from analytics_core.client_cache import ClientDirectory
from analytics_core.clients import ClientFound, ClientRecord, ClientStatus
from analytics_core.event_contract import hash_api_key
from analytics_core.quotas import Quota
from analytics_core.settings import PostgresSettings, RedisSettings, Settings, SettingsError
from capture.auth import Authenticated, Authenticator, AuthUnavailable, KeyUnknown
from capture.quota import RateLimiter
from tests.unit.auth_fakes import OneClientAtATimeDirectory, OneKeyAtATimeIndex


class SocketConnection:
    """What psycopg2 hands its wait callback: poll() and fileno(), here over a socket pair
    whose other end plays the server."""

    def __init__(self) -> None:
        self.ours, self.server = socket.socketpair()
        self.polls = 0

    def poll(self) -> int:
        self.polls += 1
        self.ours.setblocking(False)
        try:
            data = self.ours.recv(64)
        except BlockingIOError:
            return psycopg2.extensions.POLL_READ
        return psycopg2.extensions.POLL_OK if data else psycopg2.extensions.POLL_READ

    def fileno(self) -> int:
        return self.ours.fileno()


def test_a_call_to_a_server_that_never_answers_gives_up_after_the_bound() -> None:
    conn = SocketConnection()
    started = time.monotonic()
    with pytest.raises(pg.PostgresCallTimeout, match=r"did not answer within 0\.3 s"):
        pg.wait_within(conn, 0.3)  # type: ignore[arg-type]
    assert 0.29 <= time.monotonic() - started < 1.0
    assert isinstance(pg.PostgresCallTimeout("x"), psycopg2.OperationalError)


def test_a_call_the_server_answers_returns_as_soon_as_it_does() -> None:
    conn = SocketConnection()
    threading.Timer(0.1, conn.server.send, (b"answer",)).start()
    started = time.monotonic()
    pg.wait_within(conn, 5)  # type: ignore[arg-type]
    assert time.monotonic() - started < 1.0 and conn.polls >= 2


def test_the_bound_is_a_setting_that_fails_fast() -> None:
    assert Settings.from_env({}).postgres.call_timeout_s == 3.0
    assert Settings.from_env({"POSTGRES_CALL_TIMEOUT_S": "0.5"}).postgres.call_timeout_s == 0.5
    with pytest.raises(SettingsError, match="POSTGRES_CALL_TIMEOUT_S"):
        Settings.from_env({"POSTGRES_CALL_TIMEOUT_S": "soon"})
    with pytest.raises(SettingsError, match="POSTGRES_CALL_TIMEOUT_S"):
        Settings.from_env({"POSTGRES_CALL_TIMEOUT_S": "0"})
    with pytest.raises(ValueError, match="positive"):
        pg.bound_every_call(0)


def test_a_timed_out_call_opens_the_circuit_at_once() -> None:
    slow = CircuitBreaker(failures_to_open=3, retry_after_s=5.0)
    slow.failed()
    assert slow.allow()  # one ordinary failure: still closed
    slow.failed(at_once=True)
    assert not slow.allow() and slow.times_opened == 1


def test_a_lookup_connection_to_a_hung_server_waits_once_per_opening() -> None:
    """A server that accepts and never answers: the first lookup gives up at the bound and
    opens the circuit for the longer hold; the next ones answer at once, untried."""
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts, nobody answers
    settings = Settings.from_env({"POSTGRES_PORT": str(silent.getsockname()[1])}).postgres
    breaker = CircuitBreaker(failures_to_open=3, retry_after_s=1.0)
    lookups = pg.LookupConnection(settings, breaker, "a test", timeout_hold_s=5.0)
    pg.bound_every_call(0.3)
    try:
        started = time.monotonic()
        first = lookups.run(lambda conn: 1)
        assert isinstance(first, pg.PostgresAway) and first.tried
        assert "did not answer within 0.3 s" in first.detail
        assert 0.29 <= time.monotonic() - started < 2.0
        assert breaker.hold_s == 5.0 and not breaker.allow()
        started = time.monotonic()
        second = lookups.run(lambda conn: 1)
        assert isinstance(second, pg.PostgresAway) and not second.tried
        assert time.monotonic() - started < 0.05
    finally:
        psycopg2.extensions.set_wait_callback(None)
        lookups.close()
        silent.close()


class HangableIndex(OneKeyAtATimeIndex):
    """The write-key index: knows key 'k' as client acme; hangs while `hung` is set."""

    def __init__(self) -> None:
        self.hung = threading.Event()
        self.released = threading.Event()

    def client_for(self, key_hash: str) -> str | KeyUnknown:
        if self.hung.is_set():
            self.released.wait(10)
        return "acme" if key_hash == hash_api_key("k") else KeyUnknown()


class ActiveDirectory(OneClientAtATimeDirectory):
    def lookup(self, client_id: str) -> ClientFound:
        return ClientFound(
            ClientRecord("acme", ClientStatus.ACTIVE, hash_api_key("k"), "client_acme")
        )


def test_a_hung_registry_keeps_the_last_verdict_and_answers_unseen_keys_in_time() -> None:
    async def scenario() -> None:
        stale: list[int] = []
        index = HangableIndex()
        auth = Authenticator(
            index,  # type: ignore[arg-type]
            ActiveDirectory(),  # type: ignore[arg-type]
            ThreadPoolExecutor(1),
            front_ttl_s=0.2,
            wait_s=0.3,
            on_stale=lambda: stale.append(1),
        )
        assert isinstance(await auth.authenticate("k"), Authenticated)
        index.hung.set()
        await asyncio.sleep(0.25)  # the verdict expired; its lookup now hangs
        started = time.monotonic()
        assert isinstance(await auth.authenticate("k"), Authenticated)
        assert 0.05 <= time.monotonic() - started < 0.5  # waited, at most wait_s
        # The lookup has run longer than wait_s: the last verdict holds without waiting.
        started = time.monotonic()
        assert isinstance(await auth.authenticate("k"), Authenticated)
        assert time.monotonic() - started < 0.05
        assert auth.stale_served == 2 and len(stale) == 2
        # A key never seen has no verdict to keep: 'unavailable' (503) after wait_s.
        started = time.monotonic()
        unseen = await auth.authenticate("other")
        assert isinstance(unseen, AuthUnavailable) and "did not answer" in unseen.detail
        assert time.monotonic() - started < 0.5
        index.released.set()
        index.hung.clear()
        await asyncio.sleep(0.1)  # the queued lookups finish
        assert isinstance(await auth.authenticate("k"), Authenticated)

    # What is timed is the service's waits, not a full collection of this test process's
    # heap (grown by every test run before it in the same process): none runs meanwhile.
    gc.collect()
    gc.disable()
    try:
        asyncio.run(scenario())
    finally:
        gc.enable()


class HangingBook:
    default = Quota(events_per_s=7.0, burst=70)

    def __init__(self) -> None:
        self.released = threading.Event()

    def cached(self, client_id: str) -> None:
        return None

    def load_many(self, client_ids: Sequence[str]) -> dict[str, Quota]:
        self.released.wait(10)
        return {c: Quota(events_per_s=1.0, burst=1) for c in client_ids}


def test_a_first_quota_read_waits_at_most_the_registry_wait_then_the_default_applies() -> None:
    async def scenario() -> None:
        book = HangingBook()
        limiter = RateLimiter(
            RedisSettings(),
            book,  # type: ignore[arg-type]
            ThreadPoolExecutor(1),
            registry_wait_s=0.2,
        )
        started = time.monotonic()
        assert await limiter.quota("acme") == HangingBook.default
        assert time.monotonic() - started < 0.5
        book.released.set()
        await limiter.close()

    asyncio.run(scenario())


def test_a_refresh_with_nothing_due_leaves_the_redis_breakers_probe_to_a_real_call() -> None:
    """An open breaker past its hold allows one probe call. A refresh that has no client
    to read must not take it: the probe's outcome would never come, and every later
    lookup would skip Redis for good."""
    directory = ClientDirectory(
        RedisSettings(), PostgresSettings(), breaker_failures=1, breaker_retry_s=0.0
    )
    try:
        directory.redis_breaker.failed()  # open; its hold (0 s) is over at once
        assert directory.refresh_ahead() == 0  # nothing cached, so nothing due
        assert directory.redis_breaker.allow()  # the probe is still there
    finally:
        directory.close()
