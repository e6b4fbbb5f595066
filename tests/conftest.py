"""Shared fixtures: the real local stack, clients, a router in a thread, Kafka helpers.

Integration tests run against real PostgreSQL, Redis, Kafka and ClickHouse
(started by `python -m devstack up`, or external servers named by env vars).
Every test uses its own client ids and consumer groups, so the suite can run
again and again against the same stack.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import orjson
import pytest
from confluent_kafka import TopicPartition

from analytics_core import kafka_clients, lifecycle, pg, registry
from analytics_core.clickhouse import http_client
from analytics_core.clients import ClientStatus
from analytics_core.connections import open_connections
from analytics_core.dead_letter import DeadLetter, read_dead_letter
from analytics_core.event_contract import hash_api_key
from analytics_core.settings import Settings
from devstack.process import port_in_use
from tests import server_guard

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")


@pytest.fixture(scope="session")
def settings() -> Settings:
    settings = Settings.from_env()
    problem = server_guard.refusal(settings, os.environ)
    if problem is not None:
        pytest.exit(problem, returncode=2)
    return settings


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Settings:
    """The real services, up and with the metadata schema applied."""
    from devstack import api

    api.ensure_up(settings)
    conn = pg.connect(settings.postgres)
    try:
        registry.apply_metadata_schema(conn)
    finally:
        conn.close()
    return settings


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ClientFixture:
    client_id: str
    api_key: str
    database: str


@pytest.fixture
def make_client(stack: Settings) -> Callable[..., ClientFixture]:
    """Register a client; `active=True` provisions its database through the lifecycle code."""

    def make(
        prefix: str = "t", *, active: bool = True, api_key: str | None = None
    ) -> ClientFixture:
        client_id = unique_id(prefix)
        key = api_key or f"key-{client_id}"
        conn = pg.connect(stack.postgres)
        try:
            registry.add_client(conn, client_id, hash_api_key(key), name=f"test {client_id}")
        finally:
            conn.close()
        database = "client_" + client_id.replace("-", "_")
        if active:
            with open_connections(stack) as connections:
                outcome = lifecycle.provision(connections, client_id)
            assert isinstance(outcome, lifecycle.Provisioned), outcome
            database = outcome.database
        return ClientFixture(client_id, key, database)

    return make


def event(client: ClientFixture, **over: object) -> dict[str, object]:
    now = int(time.time() * 1000)
    doc: dict[str, object] = {
        "client_id": client.client_id,
        "api_key": client.api_key,
        "event_id": str(uuid.uuid4()),
        "event_name": "page_view",
        "timestamp": now,
        "sent_at": now,
        "user_id": "user-1",
        "properties": {"url": "/home"},
    }
    doc.update(over)
    return doc


class Kafka:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = kafka_clients.producer(settings.kafka, **{"linger.ms": 5})

    def send(
        self,
        values: list[bytes],
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        spread: bool = False,
    ) -> None:
        """Produce with acks=all; `spread` round-robins explicitly over all partitions."""
        partitions = self.settings.kafka.topic_partitions
        for i, v in enumerate(values):
            extra = {"partition": i % partitions} if spread else {}
            while True:
                try:
                    self.producer.produce(
                        self.settings.kafka.raw_topic,
                        value=v,
                        key=key,
                        headers=headers,  # type: ignore[arg-type]
                        **extra,  # type: ignore[arg-type]
                    )
                    break
                except BufferError:
                    self.producer.poll(0.1)
        assert self.producer.flush(30) == 0

    def send_events(self, docs: list[dict[str, object]]) -> None:
        self.send([orjson.dumps(d) for d in docs])

    def end_offsets(self, topic: str) -> dict[int, int]:
        c = kafka_clients.consumer(self.settings.kafka, unique_id("probe"))
        try:
            meta = c.list_topics(topic, timeout=10)
            out = {}
            for p in meta.topics[topic].partitions:
                _lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                out[p] = hi
            return out
        finally:
            c.close()

    def read_dead_letters(
        self,
        since: dict[int, int],
        predicate: Callable[[DeadLetter, bytes | None], bool],
        *,
        expect: int,
        timeout_s: float = 30.0,
    ) -> list[tuple[DeadLetter, bytes | None]]:
        """Dead letters written after `since` (end offsets) that match, waiting for `expect`."""
        topic = self.settings.kafka.dead_letter_topic
        c = kafka_clients.consumer(self.settings.kafka, unique_id("dl-reader"))
        c.assign([TopicPartition(topic, p, o) for p, o in since.items()])
        found: list[tuple[DeadLetter, bytes | None]] = []
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and len(found) < expect:
                msg = c.poll(0.5)
                if msg is None or msg.error():
                    continue
                letter = read_dead_letter(msg.headers())  # type: ignore[arg-type]
                if predicate(letter, msg.value()):
                    found.append((letter, msg.value()))
            # A little longer, to catch letters that should NOT be there.
            extra_until = time.monotonic() + 1.0
            while time.monotonic() < extra_until:
                msg = c.poll(0.2)
                if msg is not None and not msg.error():
                    letter = read_dead_letter(msg.headers())  # type: ignore[arg-type]
                    if predicate(letter, msg.value()):
                        found.append((letter, msg.value()))
        finally:
            c.close()
        return found


@pytest.fixture
def kafka(stack: Settings) -> Kafka:
    return Kafka(stack)


class RouterThread:
    """A real Router (router.service) running in a thread with its own consumer group."""

    def __init__(self, env: dict[str, str]) -> None:
        from router.config import RouterSettings
        from router.service import Router

        self.settings = RouterSettings.from_env(env)
        self.router = Router(self.settings)
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> RouterThread:
        def run() -> None:
            try:
                self.router.run()
            except BaseException as exc:  # surfaced by stop()
                self.error = exc
                raise

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        self.router.stop_event.set()
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "router did not stop in time"
        if self.error is not None:
            raise self.error


def router_env(group: str, **over: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ROUTER_GROUP_ID": group,
            "ROUTER_INSTANCE_ID": group,
            "ROUTER_METRICS_PORT": "0",
            "ROUTER_FLUSH_INTERVAL_MS": "200",
            "ROUTER_CLIENT_MAX_WAIT_MS": "200",
            "ROUTER_CACHE_LOCAL_TTL_S": "0.5",
        }
    )
    env.update(over)
    return env


@pytest.fixture
def start_router(stack: Settings) -> Iterator[Callable[..., RouterThread]]:
    """Start routers in threads; each test gets a fresh consumer group that starts at the
    end of the topic's history known at fixture time (older messages belong to other tests)."""
    started: list[RouterThread] = []
    group = fresh_group(stack, "router-test")

    def start(**over: str) -> RouterThread:
        r = RouterThread(router_env(group, **over)).start()
        started.append(r)
        return r

    yield start
    for r in started:
        if r.thread is not None and r.thread.is_alive():
            r.stop()


def fresh_group(settings: Settings, prefix: str) -> str:
    """A new consumer group that starts at the raw topic's current end (older messages
    belong to other tests)."""
    group = unique_id(prefix)
    _seek_group_to_end(settings, group)
    return group


def _seek_group_to_end(settings: Settings, group: str) -> None:
    """Commit the current end offsets for `group`, so its routers skip older test traffic."""
    topic = settings.kafka.raw_topic
    c = kafka_clients.consumer(settings.kafka, group)
    try:
        meta = c.list_topics(topic, timeout=10)
        tps = []
        for p in meta.topics[topic].partitions:
            _lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            tps.append(TopicPartition(topic, p, hi))
        c.commit(offsets=tps, asynchronous=False)
    finally:
        c.close()


def wait_for(
    predicate: Callable[[], object],
    timeout_s: float = 30.0,
    every_s: float = 0.2,
    what: str = "condition",
) -> object:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last value {last!r}")


def ch_scalar(settings: Settings, sql: str, **params: object) -> object:
    ch = http_client(settings.clickhouse)
    try:
        return ch.query(sql, parameters=params).result_rows[0][0]
    finally:
        ch.close()


def set_status(settings: Settings, client_id: str, status: ClientStatus) -> None:
    conn = pg.connect(settings.postgres)
    try:
        registry.set_status(conn, client_id, status)
    finally:
        conn.close()


# Below Linux's ephemeral range (32768+): no client socket takes a chosen port before its
# server binds it (a port from bind(0) is ephemeral, and docker's publishing lost that race).
FREE_PORTS = range(20000, 32000)
_handed_out: set[int] = set()


def free_port_block(size: int) -> int:
    """The first of `size` consecutive ports, all free on 127.0.0.1 and none handed out
    before in this session (so two servers of one test never get the same port)."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(FREE_PORTS.start, FREE_PORTS.stop - size)
        block = range(base, base + size)
        if not any(p in _handed_out or port_in_use("127.0.0.1", p) for p in block):
            _handed_out.update(block)
            return base
    raise RuntimeError(f"no block of {size} free ports in {FREE_PORTS.start}-{FREE_PORTS.stop}")


def free_port() -> int:
    return free_port_block(1)


@contextmanager
def frozen(settings: Settings, service: str) -> Iterator[None]:
    """A private server hung, not stopped: every process of it SIGSTOPped, so the kernel
    still accepts connections and takes queries but nothing ever answers (a paused
    container, a dead network path). SIGCONT at the end, whatever happens."""
    from devstack import api

    pids = api.service(settings, service).pids()
    assert pids, f"{service} of {settings} is not running"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture
def private_services(stack: Settings, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Start private instances of some services (own ports and state dir) for tests that stop
    them, so the shared stack other tests use is never disturbed. Returns (settings, env)."""
    from devstack import api

    started: list[tuple[Settings, list[str]]] = []

    def start(*services: str) -> tuple[Settings, dict[str, str]]:
        env = dict(os.environ)
        env["PIPELINE_STATE_DIR"] = str(tmp_path_factory.mktemp("private-stack"))
        if "clickhouse" in services:
            env["CLICKHOUSE_HTTP_PORT"] = str(free_port())
            env["CLICKHOUSE_NATIVE_PORT"] = str(free_port())
        if "redis" in services:
            env["REDIS_PORT"] = str(free_port())
        if "postgres" in services:
            env["POSTGRES_PORT"] = str(free_port())
        private = Settings.from_env(env)
        api.ensure_up(private, list(services))
        started.append((private, list(services)))
        if "postgres" in services:
            conn = pg.connect(private.postgres)
            try:
                registry.apply_metadata_schema(conn)
            finally:
                conn.close()
        return private, env

    yield start
    for private, services in started:
        api.reset(private, services)
