"""The router against the real stack: routing, every dead-letter reason, outages, crashes."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from analytics_core import kafka_clients, lifecycle, pg, registry
from analytics_core.clickhouse import http_client
from analytics_core.clients import ClientStatus
from analytics_core.connections import open_connections
from analytics_core.event_contract import hash_api_key
from analytics_core.reasons import Reason
from analytics_core.settings import Settings
from devstack import api
from tests.conftest import (
    ClientFixture,
    Kafka,
    ch_scalar,
    event,
    fresh_group,
    frozen,
    router_env,
    set_status,
    unique_id,
    wait_for,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def counts(settings: Settings, database: str) -> tuple[int, int]:
    """(rows, distinct event ids) as plain count(): duplicates would show, no FINAL."""
    ch = http_client(settings.clickhouse)
    try:
        row = ch.query(f"SELECT count(), uniqExact(event_id) FROM `{database}`.events_base")
        return int(row.result_rows[0][0]), int(row.result_rows[0][1])
    finally:
        ch.close()


def wait_rows(settings: Settings, database: str, n: int, timeout_s: float = 60) -> None:
    wait_for(lambda: counts(settings, database)[0] >= n, timeout_s, what=f"{n} rows in {database}")


def test_routes_two_clients_into_their_own_databases_with_trace(
    stack: Settings,
    make_client,
    kafka: Kafka,
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    a, b = make_client("ra"), make_client("rb")
    start_router()
    kafka.send_events([event(a, n=i) for i in range(30)] + [event(b) for _ in range(20)])
    # A batch message (JSON array) is accepted too.
    kafka.send([orjson.dumps([event(b), event(b)])])
    wait_rows(stack, a.database, 30)
    wait_rows(stack, b.database, 22)
    time.sleep(1)
    assert counts(stack, a.database) == (30, 30)
    assert counts(stack, b.database) == (22, 22)
    ch = http_client(stack.clickhouse)
    try:
        row = ch.query(
            f"SELECT kafka_topic, kafka_offset >= 0, received_at <= ingested_at, router_instance,"
            f" JSONExtractString(event_properties, 'url'), attempt FROM `{a.database}`.events_base"
            " LIMIT 1"
        ).result_rows[0]
    finally:
        ch.close()
    assert row[0] == stack.kafka.raw_topic and row[1] and row[2]
    assert row[3].startswith("router-test") and row[4] == "/home" and row[5] == 1


def test_every_dead_letter_reason_keeps_the_original_bytes(
    stack: Settings,
    make_client,
    kafka: Kafka,
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    active, pending = make_client("dl"), make_client("dlp", active=False)
    marker = uuid.uuid4().hex
    cases: dict[Reason, bytes] = {
        Reason.INVALID_JSON: b'{"client_id": "' + marker.encode() + b'", "trunc',
        Reason.INVALID_ENCODING: b'{"m": "' + marker.encode() + b'\xff"}',
        Reason.PAYLOAD_TOO_LARGE: orjson.dumps(
            event(active, properties={"m": marker, "blob": "x" * 600_000})
        ),
        Reason.SCHEMA_VIOLATION: orjson.dumps(event(active, timestamp="soon", m=marker)),
        Reason.UNKNOWN_CLIENT: orjson.dumps(event(active, client_id=unique_id("ghost"), m=marker)),
        Reason.INVALID_API_KEY: orjson.dumps(event(active, api_key="wrong", m=marker)),
        Reason.CLIENT_INACTIVE: orjson.dumps(event(pending, m=marker)),
    }
    since = kafka.end_offsets(stack.kafka.dead_letter_topic)
    start_router()
    kafka.send(list(cases.values()))
    found = kafka.read_dead_letters(
        since, lambda _l, v: v is not None and marker.encode() in v, expect=len(cases)
    )
    by_reason = {letter.reason: (letter, value) for letter, value in found}
    assert len(found) == len(cases)
    assert set(by_reason) == set(cases)
    for reason, original in cases.items():
        letter, value = by_reason[reason]
        assert value == original  # unchanged bytes
        assert letter.source.topic == stack.kafka.raw_topic and letter.source.offset >= 0
        assert letter.attempt == 1 and letter.router_version and letter.detail
    assert by_reason[Reason.CLIENT_INACTIVE][0].client_id == pending.client_id
    assert counts(stack, active.database) == (0, 0)


def test_key_rotation_and_deactivation_take_effect_after_invalidation(
    stack: Settings,
    make_client,
    kafka: Kafka,
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    c = make_client("rot")
    start_router(ROUTER_CACHE_LOCAL_TTL_S="600", ROUTER_CACHE_TTL_S="600")
    kafka.send_events([event(c)])
    wait_rows(stack, c.database, 1)
    # Rotate the key in PostgreSQL: the cached entry still says the old key...
    conn = pg.connect(stack.postgres)
    try:
        registry.set_api_key_hash(conn, c.client_id, hash_api_key("new-key"))
    finally:
        conn.close()
    since = kafka.end_offsets(stack.kafka.dead_letter_topic)
    lifecycle.invalidate_cache(stack, c.client_id)  # ...until the hook drops it everywhere.
    time.sleep(0.5)
    kafka.send_events([event(c, api_key="new-key"), event(c)])  # new key ok, old key refused
    wait_rows(stack, c.database, 2)
    [(letter, _v)] = kafka.read_dead_letters(
        since, lambda dl, _v: dl.client_id == c.client_id, expect=1
    )
    assert letter.reason is Reason.INVALID_API_KEY
    set_status(stack, c.client_id, ClientStatus.FAILED)
    lifecycle.invalidate_cache(stack, c.client_id)
    time.sleep(0.5)
    since = kafka.end_offsets(stack.kafka.dead_letter_topic)
    kafka.send_events([event(c, api_key="new-key")])
    [(letter, _v)] = kafka.read_dead_letters(
        since, lambda dl, _v: dl.client_id == c.client_id, expect=1
    )
    assert letter.reason is Reason.CLIENT_INACTIVE
    assert counts(stack, c.database) == (2, 2)


def test_one_broken_client_database_does_not_stop_the_others(
    stack: Settings,
    make_client,
    kafka: Kafka,
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    broken, healthy = make_client("brk"), make_client("ok")
    ch = http_client(stack.clickhouse)
    ch.command(f"DROP DATABASE `{broken.database}` SYNC")
    ch.close()
    since = kafka.end_offsets(stack.kafka.dead_letter_topic)
    start_router(ROUTER_DESTINATION_MAX_ATTEMPTS="2", ROUTER_RETRY_BACKOFF_MS="100")
    singles = [orjson.dumps(event(broken)) for _ in range(5)]
    batch = orjson.dumps([event(broken), event(healthy), event(broken)])
    kafka.send(singles + [batch] + [orjson.dumps(event(healthy)) for _ in range(40)])
    wait_rows(stack, healthy.database, 41)
    letters = kafka.read_dead_letters(
        since, lambda dl, _v: dl.client_id == broken.client_id, expect=7
    )
    assert len(letters) == 7
    assert {letter.reason for letter, _ in letters} == {Reason.DESTINATION_ERROR}
    # Buffered rows do not keep the original bytes: they are read back from Kafka, unchanged.
    assert sorted(v for _l, v in letters if v != batch) == sorted(singles)
    assert sorted(letter.batch_index for letter, v in letters if v == batch) == [0, 2]
    assert all(letter.event_id and letter.attempt == 1 for letter, _ in letters)
    assert counts(stack, healthy.database) == (41, 41)


def test_clickhouse_outage_loses_nothing_and_duplicates_nothing(
    stack: Settings,
    make_client,
    kafka: Kafka,
    start_router,
    private_services,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="router")
    private, env = private_services("clickhouse")
    client_id = unique_id("cho")
    conn = pg.connect(stack.postgres)
    try:
        registry.add_client(conn, client_id, hash_api_key("k"))
    finally:
        conn.close()
    # Provision into the private ClickHouse; PostgreSQL/Redis/Kafka are the shared ones.
    with open_connections(private) as connections:
        outcome = lifecycle.provision(connections, client_id)
    assert isinstance(outcome, lifecycle.Provisioned)
    c = ClientFixture(client_id, "k", outcome.database)
    since = kafka.end_offsets(stack.kafka.dead_letter_topic)
    start_router(
        CLICKHOUSE_HTTP_PORT=env["CLICKHOUSE_HTTP_PORT"],
        ROUTER_RETRY_BACKOFF_MS="200",
        ROUTER_RETRY_BACKOFF_MAX_MS="1000",
    )
    kafka.send_events([event(c) for _ in range(100)])
    wait_rows(private, c.database, 100)
    api.stop_service(private, "clickhouse")
    kafka.send_events([event(c) for _ in range(300)])
    time.sleep(3)  # the router retries against a dead server meanwhile
    api.start_service(private, "clickhouse")
    wait_rows(private, c.database, 400)
    time.sleep(1.5)
    assert counts(private, c.database) == (400, 400)
    assert (
        kafka.read_dead_letters(
            since, lambda dl, _v: dl.client_id == c.client_id, expect=0, timeout_s=1
        )
        == []
    )
    said = [r.getMessage() for r in caplog.records]
    # Down, then back: both said (an operator reading the log knows the outage ended).
    assert "clickhouse unavailable; holding rows and retrying" in said
    assert said.index("clickhouse reachable again") > said.index(
        "clickhouse unavailable; holding rows and retrying"
    )


def test_redis_down_falls_back_to_postgres(
    stack: Settings,
    make_client,
    kafka: Kafka,
    start_router,
    private_services,  # type: ignore[no-untyped-def]
) -> None:
    private, env = private_services("redis")
    c = make_client("rds")
    start_router(REDIS_PORT=env["REDIS_PORT"], ROUTER_CACHE_LOCAL_TTL_S="0.1")
    kafka.send_events([event(c) for _ in range(10)])
    wait_rows(stack, c.database, 10)
    api.stop_service(private, "redis")
    kafka.send_events([event(c) for _ in range(10)])
    wait_rows(stack, c.database, 20)
    assert counts(stack, c.database) == (20, 20)


def provisioned_in(private: Settings, *client_ids: str) -> list[ClientFixture]:
    """Clients registered in a private PostgreSQL (API key "k") and provisioned."""
    conn = pg.connect(private.postgres)
    try:
        for cid in client_ids:
            registry.add_client(conn, cid, hash_api_key("k"))
    finally:
        conn.close()
    out = []
    for cid in client_ids:
        with open_connections(private) as connections:
            outcome = lifecycle.provision(connections, cid)
        assert isinstance(outcome, lifecycle.Provisioned)
        out.append(ClientFixture(cid, "k", outcome.database))
    return out


def test_registry_outage_holds_events_and_serves_cached_clients(
    stack: Settings,
    kafka: Kafka,
    start_router,
    private_services,  # type: ignore[no-untyped-def]
) -> None:
    """PostgreSQL down: cached clients keep flowing; unseen clients wait (no dead letter)."""
    private, env = private_services("postgres", "redis")
    k, u = provisioned_in(private, unique_id("pgk"), unique_id("pgu"))
    known, unseen = k.client_id, u.client_id
    since = kafka.end_offsets(stack.kafka.dead_letter_topic)
    start_router(
        POSTGRES_PORT=env["POSTGRES_PORT"],
        REDIS_PORT=env["REDIS_PORT"],
        ROUTER_RETRY_BACKOFF_MS="200",
        ROUTER_RETRY_BACKOFF_MAX_MS="500",
    )
    kafka.send_events([event(k)])
    wait_rows(stack, k.database, 1)
    api.stop_service(private, "postgres")
    kafka.send_events([event(k) for _ in range(5)])
    wait_rows(stack, k.database, 6)  # served from the Redis cache
    kafka.send_events([event(u) for _ in range(3)])
    time.sleep(2)
    assert counts(stack, u.database) == (0, 0)  # waiting, not dead-lettered
    api.start_service(private, "postgres")
    wait_rows(stack, u.database, 3)
    assert (
        kafka.read_dead_letters(
            since, lambda dl, _v: dl.client_id in (known, unseen), expect=0, timeout_s=1
        )
        == []
    )


def test_hung_registry_does_not_stop_the_clients_it_knows(
    stack: Settings,
    kafka: Kafka,
    tmp_path: Path,
    private_services,  # type: ignore[no-untyped-def]
) -> None:
    """PostgreSQL hung on an open connection (every process SIGSTOPped): the lookup gives
    up after POSTGRES_CALL_TIMEOUT_S, cached clients keep flowing, an unseen client waits
    (no dead letter) and flows once PostgreSQL answers again. Before the bound, the one
    lookup blocked the routing loop, and with it every tenant, until PostgreSQL came back."""
    private, env = private_services("postgres", "redis")
    k, u = provisioned_in(private, unique_id("hgk"), unique_id("hgu"))
    known, unseen = k.client_id, u.client_id
    since = kafka.end_offsets(stack.kafka.dead_letter_topic)
    group = fresh_group(stack, "router-hung")
    proc = _router_process(
        router_env(
            group,
            POSTGRES_PORT=env["POSTGRES_PORT"],
            REDIS_PORT=env["REDIS_PORT"],
            POSTGRES_CALL_TIMEOUT_S="1",
            ROUTER_RETRY_BACKOFF_MS="200",
            ROUTER_RETRY_BACKOFF_MAX_MS="500",
        ),
        tmp_path / "router.log",
    )
    try:
        kafka.send_events([event(k)])
        wait_rows(stack, k.database, 1)  # looked up in PostgreSQL: its connection stays open
        with frozen(private, "postgres"):
            # The unseen client's events first, in a partition of their own: its lookup
            # hangs, then fails in time and pauses only that partition.
            for p, docs in ((0, [event(u) for _ in range(3)]), (1, [event(k) for _ in range(5)])):
                for doc in docs:
                    kafka.producer.produce(stack.kafka.raw_topic, orjson.dumps(doc), partition=p)
                assert kafka.producer.flush(30) == 0
            wait_rows(stack, k.database, 6, timeout_s=30)
            assert counts(stack, u.database) == (0, 0)  # waiting, not dead-lettered
            assert proc.poll() is None
        wait_rows(stack, u.database, 3)
        assert counts(stack, k.database) == (6, 6)
        assert (
            kafka.read_dead_letters(
                since, lambda dl, _v: dl.client_id in (known, unseen), expect=0, timeout_s=1
            )
            == []
        )
        log = (tmp_path / "router.log").read_text()
        assert "PostgreSQL did not answer within 1 s" in log, log[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def assert_accounting(settings: Settings, group: str, routed: dict[str, int]) -> None:
    ch = http_client(settings.clickhouse)
    try:
        ranges = ch.query(
            f"SELECT partition, first_offset, next_offset, counts"
            f" FROM `{settings.clickhouse.ops_database}`.router_consumption FINAL"
            " WHERE consumer_group = {g:String} ORDER BY partition, first_offset",
            parameters={"g": group},
        ).result_rows
    finally:
        ch.close()
    by_partition: dict[int, list[tuple[int, int]]] = {}
    totals: dict[str, int] = {}
    for partition, first, nxt, cnts in ranges:
        by_partition.setdefault(partition, []).append((first, nxt))
        for key, value in cnts.items():
            client, outcome = key.split("|")[:2]
            if outcome == "routed":
                totals[client] = totals.get(client, 0) + value
    for partition, spans in by_partition.items():
        for (_a, b), (c, _d) in itertools.pairwise(spans):
            assert b == c, f"gap or overlap in partition {partition}: {spans}"
    assert {k: totals.get(k, 0) for k in routed} == routed


_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_router_left_running() -> Iterator[None]:
    """A test that fails half-way must not leave its router consuming the shared topic (it
    would route the next tests' events a second time)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _router_process(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "router"],
        cwd=REPO,
        env=env,
        stdout=open(log_path, "ab"),  # noqa: SIM115  # the child keeps it; it dies with it
        stderr=subprocess.STDOUT,
    )
    _STARTED.append(proc)
    return proc


def test_sigkill_mid_batch_then_restart_has_no_loss_and_no_duplicates(
    stack: Settings,
    make_client,
    kafka: Kafka,
    start_router,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    clients = [make_client("kill") for _ in range(3)]
    group = fresh_group(stack, "router-kill")
    # Small batches and a small buffer: many INSERT/commit cycles to be killed in the middle of.
    env = router_env(
        group,
        ROUTER_FLUSH_MAX_ROWS="300",
        ROUTER_FLUSH_INTERVAL_MS="300",
        ROUTER_MAX_BUFFERED_ROWS="1000",
    )
    n = 30000
    kafka.send_events([event(clients[i % 3], n=i) for i in range(n)])
    proc = _router_process(env, tmp_path / "router.log")
    # Kill it while it is inserting: some rows are in, the rest (and some commits) are not.
    wait_for(
        lambda: sum(counts(stack, c.database)[0] for c in clients) > 600,
        60,
        every_s=0.05,
        what="first rows",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    before = sum(counts(stack, c.database)[0] for c in clients)
    assert before < n, "the router finished before it could be killed; the test proves nothing"
    proc = _router_process(env, tmp_path / "router.log")
    try:
        wait_for(
            lambda: sum(counts(stack, c.database)[0] for c in clients) >= n,
            90,
            what="all rows after restart",
        )
        time.sleep(2)
        for c in clients:
            rows, distinct = counts(stack, c.database)
            assert rows == distinct == n // 3, (c.client_id, rows, distinct)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    # Accounting: the replayed ranges replaced the pre-crash ones; every event counted once.
    assert_accounting(stack, group, {c.client_id: n // 3 for c in clients})
    from analytics_core.reconciliation.model import Report
    from analytics_core.reconciliation.run import ReconciliationOptions, reconcile_client

    for c in clients:
        with open_connections(stack) as connections:
            r = reconcile_client(
                connections,
                c.client_id,
                ReconciliationOptions(grace_s=0, lookback_hours=3, groups=(group,)),
            )
        assert isinstance(r, Report) and r.passed, r


def test_sigterm_flushes_commits_and_exits_in_bounded_time(
    stack: Settings,
    make_client,
    kafka: Kafka,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    c = make_client("term")
    group = fresh_group(stack, "router-term")
    env = router_env(
        group,
        ROUTER_FLUSH_INTERVAL_MS="60000",
        ROUTER_FLUSH_MAX_ROWS="100000",
        ROUTER_MAX_BUFFERED_ROWS="200000",
    )
    proc = _router_process(env, tmp_path / "router.log")
    kafka.send_events([event(c) for _ in range(50)])
    time.sleep(4)
    assert counts(stack, c.database)[0] == 0  # still buffered (60 s flush interval)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert time.monotonic() - started < 20
    assert counts(stack, c.database) == (50, 50)
    # Offsets were committed: a new router in the same group reads nothing again.
    proc = _router_process(env, tmp_path / "router.log")
    time.sleep(5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert counts(stack, c.database) == (50, 50)
    log = (tmp_path / "router.log").read_text()
    assert '"msg": "router stopped"' in log or '"msg":"router stopped"' in log


def test_two_routers_in_one_group_share_the_partitions(
    stack: Settings,
    make_client,
    kafka: Kafka,
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    clients = [make_client("two") for _ in range(4)]
    r1 = start_router(ROUTER_INSTANCE_ID="r-one")
    r2 = start_router(ROUTER_INSTANCE_ID="r-two")
    wait_for(lambda: r1.router.assigned and r2.router.assigned, 30, what="both routers assigned")
    assert not (r1.router.assigned & r2.router.assigned)
    kafka.send([orjson.dumps(event(clients[i % 4])) for i in range(400)], spread=True)
    for c in clients:
        wait_rows(stack, c.database, 100)
    time.sleep(1)
    instances: set[str] = set()
    for c in clients:
        assert counts(stack, c.database) == (100, 100)
        ch = http_client(stack.clickhouse)
        rows = ch.query(f"SELECT DISTINCT router_instance FROM `{c.database}`.events_base")
        instances |= {r[0] for r in rows.result_rows}
        ch.close()
    assert instances == {"r-one", "r-two"}


def test_malformed_input_corpus_never_crashes_and_lands_everything(
    stack: Settings,
    make_client,
    kafka: Kafka,
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    c = make_client("mal")
    marker = uuid.uuid4().hex
    good = [orjson.dumps(event(c, m=marker)) for _ in range(5)]
    deep = b'{"m": "' + marker.encode() + b'", "properties": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    bad: list[tuple[bytes, Reason]] = [
        (b'{"m": "' + marker.encode() + b'", ', Reason.INVALID_JSON),
        (orjson.dumps(event(c, m=marker, timestamp={"a": 1})), Reason.SCHEMA_VIOLATION),
        (orjson.dumps(event(c, m=marker, user_id=["x"])), Reason.SCHEMA_VIOLATION),
        (orjson.dumps(event(c, m=marker, event_name="x" * 5000)), Reason.SCHEMA_VIOLATION),
        (
            orjson.dumps(event(c, m=marker, properties={"s": "y" * 700_000})),
            Reason.PAYLOAD_TOO_LARGE,
        ),
        (deep, Reason.INVALID_JSON),
        (b'{"m": "' + marker.encode() + b'", "x": "\xc3\x28"}', Reason.INVALID_ENCODING),
        (
            orjson.dumps(event(c, m=marker, client_id="x'; DROP DATABASE default; --")),
            Reason.SCHEMA_VIOLATION,
        ),
        (orjson.dumps(event(c, m=marker, client_id="`system`")), Reason.SCHEMA_VIOLATION),
        (orjson.dumps({"m": marker, "nothing": True}), Reason.SCHEMA_VIOLATION),
        (orjson.dumps([marker, 1, None]), Reason.SCHEMA_VIOLATION),
    ]
    since = kafka.end_offsets(stack.kafka.dead_letter_topic)
    r = start_router()
    kafka.send(good + [b for b, _ in bad] + [b"", b"null", b"12"])
    wait_rows(stack, c.database, 5)
    found = kafka.read_dead_letters(
        since, lambda _l, v: v is not None and marker.encode() in v, expect=len(bad) + 2
    )
    got = sorted((v, letter.reason.value) for letter, v in found if v is not None)
    # The array with three non-objects yields three dead letters of the same bytes.
    expected = sorted(
        [(b, reason.value) for b, reason in bad] + [(bad[-1][0], Reason.SCHEMA_VIOLATION.value)] * 2
    )
    assert got == expected
    assert counts(stack, c.database) == (5, 5)
    assert r.thread is not None and r.thread.is_alive()
    assert ch_scalar(stack, "SELECT count() FROM system.databases WHERE name = 'default'") == 1


def test_router_cli_help_and_bad_config_fail_fast() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "router", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "ROUTER_FLUSH_MAX_ROWS" in out.stdout
    env = dict(os.environ, ROUTER_FLUSH_MAX_ROWS="many")
    bad = subprocess.run(
        [sys.executable, "-m", "router"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "ROUTER_FLUSH_MAX_ROWS" in bad.stderr


def test_metrics_health_and_readiness_endpoints(
    stack: Settings,
    make_client,  # type: ignore[no-untyped-def]
    kafka: Kafka,
    tmp_path: Path,
) -> None:
    import urllib.request

    from tests.conftest import free_port

    c = make_client("met")
    group = fresh_group(stack, "router-metrics")
    port = free_port()
    proc = _router_process(router_env(group, ROUTER_METRICS_PORT=str(port)), tmp_path / "r.log")

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, ""
        except OSError:
            return 0, ""

    try:
        wait_for(lambda: get("/healthz")[0] == 200, 30, what="/healthz")
        wait_for(lambda: get("/readyz")[0] == 200, 30, what="/readyz (partitions assigned)")
        kafka.send_events([event(c) for _ in range(7)] + [event(c, api_key="bad")])
        wait_rows(stack, c.database, 7)

        def routed_line() -> str:
            body = get("/metrics")[1]
            line = f'router_events_routed_total{{client_id="{c.client_id}"}} 7.0'
            return line if line in body else ""

        wait_for(routed_line, 20, what="routed counter in /metrics")
        body = get("/metrics")[1]
        assert 'router_events_dead_lettered_total{reason="invalid_api_key"}' in body
        assert "router_end_to_end_latency_seconds_count" in body
        assert "router_consumer_lag" in body
        assert get("/nope")[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_a_backlog_drains_within_the_memory_budget_in_catch_up_mode(
    stack: Settings,
    make_client,
    kafka: Kafka,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    import re
    import urllib.request

    from tests.conftest import free_port

    clients = [make_client("bklg") for _ in range(20)]
    group = fresh_group(stack, "router-backlog")
    n = 20_000
    kafka.send_events([event(clients[i % 20], n=i) for i in range(n)])  # a backlog first
    port = free_port()
    env = router_env(
        group,
        ROUTER_METRICS_PORT=str(port),
        ROUTER_CLIENT_MIN_ROWS="100000",  # never written for its size: time or memory only
        # Longer than the test waits: a pause that only a client's time limit ends fails it.
        ROUTER_CATCHUP_MAX_WAIT_MS="600000",
        ROUTER_MAX_BUFFERED_MB="4",  # ~6 000 rows of these events: pressure flushes
    )
    proc = _router_process(env, tmp_path / "router.log")

    def metric(text: str, name: str) -> float:
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    samples: list[tuple[float, float]] = []  # (catching_up, buffered_bytes)

    def drained() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return False
        samples.append((metric(text, "router_catching_up"), metric(text, "router_buffered_bytes")))
        return sum(counts(stack, c.database)[0] for c in clients) >= n

    try:
        wait_for(drained, 120, every_s=0.1, what="the backlog in ClickHouse")
        wait_for(lambda: drained() and samples[-1][0] == 0, 30, what="catch-up mode to end")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    for c in clients:
        assert counts(stack, c.database) == (n // 20, n // 20)
    assert any(up == 1 for up, _ in samples), "the backlog never put the router in catch-up"
    # The budget holds, give or take the one poll (2000 messages) that crosses it.
    assert max(b for _, b in samples) <= 4 * 2**20 * 1.5


def test_a_rejected_row_whose_original_left_kafka_is_dead_lettered_as_its_routed_row(
    stack: Settings, kafka: Kafka
) -> None:
    """The rare case behind reading originals back: retention removed the message first."""
    from confluent_kafka.admin import NewTopic

    from analytics_core.event_contract import Origin, ValidEvent
    from router.buffers import Batch
    from router.clickhouse_sink import Rejected
    from router.config import RouterSettings
    from router.decision import Routed
    from router.rows import pending_row, read_row
    from router.service import Router

    topic = unique_id("gone").replace("-", "_")
    admin = kafka_clients.admin(stack.kafka)
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result(30)
    client_id = unique_id("gone")
    try:
        for i in range(3):
            kafka.producer.produce(topic, value=f"original-{i}".encode(), partition=0)
        kafka.producer.flush(30)
        since = kafka.end_offsets(stack.kafka.dead_letter_topic)
        env = router_env(fresh_group(stack, "router-gone"), KAFKA_RAW_TOPIC=topic)
        router = Router(RouterSettings.from_env(env))

        def row(offset: int):  # type: ignore[no-untyped-def]
            ev = ValidEvent(
                0, client_id, "h", f"00000000-0000-4000-8000-{offset:012d}", False, "pv",
                1795771200000, None, "u", b'{"url": "/x"}',
            )  # fmt: skip
            routed = Routed(client_id, "client_gone", ev, Origin(topic, 0, offset), 1)
            return pending_row(routed, topic, 0, offset, 0, 1795771200000)

        rows = [row(1), row(50)]  # offset 1 is in the topic; offset 50 never was
        batch = Batch.from_rows("client_gone", client_id, rows)
        batch.attempts = router.rs.destination_max_attempts - 1
        try:
            router._rejected(batch, Rejected(81, "Database client_gone does not exist"))
            router.letters.flush(30)
        finally:
            router.consumer.close()
            router.directory.close()
        letters = kafka.read_dead_letters(since, lambda dl, _v: dl.client_id == client_id, expect=2)
        by_offset = {letter.source.offset: (letter, v) for letter, v in letters}
        kept, value = by_offset[1]
        assert value == b"original-1" and "no longer in Kafka" not in kept.detail
        gone, value = by_offset[50]
        assert value == read_row(rows[1].line).as_json() and "no longer in Kafka" in gone.detail
        assert gone.reason is Reason.DESTINATION_ERROR
        assert gone.event_id == "00000000-0000-4000-8000-000000000050"
    finally:
        for f in admin.delete_topics([topic]).values():
            f.result(30)


def test_case5_dead_letter_only_offsets_are_committed_and_a_sigkill_repeats_only_in_flight(
    stack: Settings,
    make_client,  # type: ignore[no-untyped-def]
    kafka: Kafka,
    tmp_path: Path,
) -> None:
    """Messages that only produce dead letters are committed within a flush interval, the
    lag metric counts from the committed offset, and a SIGKILL re-sends only the letters
    of messages that were still in flight (measured, not guessed)."""
    from tests.conftest import free_port
    from tests.integration.router_support import (
        committed_offsets,
        end_offsets,
        letters_between,
        metric_values,
        metrics,
        router_process,
    )

    c = make_client("dlo")
    group = fresh_group(stack, "router-dlo")
    raw, dead = stack.kafka.raw_topic, stack.kafka.dead_letter_topic
    port = free_port()
    env = router_env(group, ROUTER_FLUSH_INTERVAL_MS="500", ROUTER_METRICS_PORT=str(port))
    since = end_offsets(stack, dead)
    proc = router_process(env, tmp_path / "router.log")
    try:
        wait_for(lambda: metrics(port), 30, what="the router's /metrics")
        marker = uuid.uuid4().hex
        kafka.send([orjson.dumps(event(c, api_key="wrong", m=marker)) for _ in range(300)])
        ends = end_offsets(stack, raw)
        wait_for(
            lambda: all(committed_offsets(stack, group, raw)[p] >= o for p, o in ends.items()),
            20,
            what="every dead-lettered offset committed (no row was ever inserted)",
        )

        def lag_is_zero() -> bool:
            lags = metric_values(metrics(port), "router_consumer_lag")
            return bool(lags) and all(v == 0 for v in lags.values())

        wait_for(lag_is_zero, 20, what="router_consumer_lag 0 from the committed offsets")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # Phase 2: kill it while it dead-letters a flood.
        flood = [orjson.dumps(event(c, api_key="wrong", m=marker)) for _ in range(6000)]
        proc = router_process(env, tmp_path / "router.log")
        kafka.send(flood, spread=True)
        wait_for(
            lambda: sum(end_offsets(stack, dead).values()) - sum(since.values()) > 300 + 1500,
            60,
            every_s=0.05,
            what="part of the flood dead-lettered",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = committed_offsets(stack, group, raw)
        before = letters_between(stack, since, end_offsets(stack, dead))
        total_ends = end_offsets(stack, raw)
        assert any(at_kill[p] < o for p, o in total_ends.items()), "flood done before the kill"
        proc = router_process(env, tmp_path / "router.log")
        wait_for(
            lambda: all(
                committed_offsets(stack, group, raw)[p] >= o for p, o in total_ends.items()
            ),
            90,
            what="the rest of the flood after the restart",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    after = letters_between(stack, since, end_offsets(stack, dead))
    mine = [(dl.source.partition, dl.source.offset) for dl, v in after if marker.encode() in v]
    assert len(set(mine)) == 300 + 6000  # every message has its dead letter
    in_flight = {
        (dl.source.partition, dl.source.offset)
        for dl, v in before
        if marker.encode() in v and dl.source.offset >= at_kill[dl.source.partition]
    }
    duplicates = len(mine) - len(set(mine))
    print(f"SIGKILL during a dead-letter flood: {duplicates} letters repeated, all in flight")
    assert duplicates == len(in_flight)  # the idle phase repeated none at all
    assert all(mine.count(k) == 2 for k in in_flight)
    # Three router processes dead-lettered 6300 messages of one client for one reason: the
    # log has about a line per process and minute (router.letter_log), not one per letter.
    lines = [
        orjson.loads(line)
        for line in (tmp_path / "router.log").read_text().splitlines()
        if line.startswith("{") and '"dead-lettered"' in line
    ]
    mine_logged = [d for d in lines if d.get("client_id") == c.client_id]
    assert 3 <= len(mine_logged) <= 9, len(mine_logged)
    assert all(d["reason"] == "invalid_api_key" for d in mine_logged)


def test_case6_a_frozen_redis_costs_little_and_opens_the_circuit(
    stack: Settings,
    make_client,
    kafka: Kafka,
    start_router,
    private_services,  # type: ignore[no-untyped-def]
) -> None:
    """Redis stops answering (SIGSTOP: connections hang, nothing is refused). Each call is
    bounded (ROUTER_REDIS_TIMEOUT_MS) and never retried by the client, and after a few
    failures the circuit opens: lookups go to PostgreSQL without touching Redis, one probe
    per ROUTER_BREAKER_RETRY_S. The number of Redis failures proves the calls were skipped."""
    from analytics_core.circuit_breaker import State

    private, env = private_services("redis")
    c = make_client("rfz")
    r = start_router(
        REDIS_PORT=env["REDIS_PORT"], ROUTER_CACHE_LOCAL_TTL_S="0.2", ROUTER_BREAKER_RETRY_S="2"
    )
    kafka.send_events([event(c) for _ in range(10)])
    wait_rows(stack, c.database, 10)
    pid = api.service(private, "redis").pid()
    assert pid is not None
    directory = r.router.directory
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        for _ in range(10):  # a steady flow for a few seconds: many lookups, local TTL 0.2 s
            kafka.send_events([event(c) for _ in range(200)])
            time.sleep(0.3)
        wait_rows(stack, c.database, 2010, timeout_s=60)
        took = time.monotonic() - started
        assert directory.redis_breaker.times_opened >= 1
        # 3 failures open it, then at most one failed probe per 2 s (and the refresh's).
        assert directory.stats.redis_errors <= 3 + 2 * (took / 2 + 1), directory.stats
        assert directory.stats.pg_reads > 0
    finally:
        os.kill(pid, signal.SIGCONT)
    kafka.send_events([event(c) for _ in range(10)])
    wait_rows(stack, c.database, 2020)

    def closed_again() -> bool:
        kafka.send_events([event(c)])
        return directory.redis_breaker.state is State.CLOSED

    wait_for(closed_again, 30, every_s=0.5, what="the Redis circuit closed after a probe")
    assert counts(stack, c.database)[0] == counts(stack, c.database)[1]


def test_a_message_too_large_for_the_dead_letter_topic_is_cut_not_stuck(
    stack: Settings,
    kafka: Kafka,
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    """A raw message near Kafka's 1 MB limit can not travel on as a dead letter with its
    envelope; re-sending it forever would hold its partition's offsets. It is sent cut to
    the contract's 512 KiB, and the detail says so."""
    from analytics_core.event_contract import MAX_MESSAGE_BYTES

    marker = uuid.uuid4().hex.encode()
    huge = marker + b"[" * (999_900 - len(marker))  # the envelope headers push it over
    since = kafka.end_offsets(stack.kafka.dead_letter_topic)
    start_router()
    kafka.send([huge])
    [(letter, value)] = kafka.read_dead_letters(
        since, lambda _l, v: v is not None and v.startswith(marker), expect=1
    )
    assert letter.reason is Reason.PAYLOAD_TOO_LARGE
    assert value == huge[:MAX_MESSAGE_BYTES]
    assert f"value cut to its first {MAX_MESSAGE_BYTES} of {len(huge)} bytes" in letter.detail


def test_transactions_aborted_are_never_stored_and_their_markers_do_not_hold_the_commit(
    stack: Settings,
    make_client,  # type: ignore[no-untyped-def]
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    """A third-party transactional producer: what it commits is stored, what it aborts is
    not, and the offsets its commit/abort markers take are committed too (before, the
    committed offset stayed one short of the log end: lag 1 and a stalled-commits alert on
    an idle router)."""
    from tests.integration.router_support import committed_offsets, end_offsets, private_topics

    c = make_client("txn")
    with private_topics(stack, "txn", partitions=1) as s:
        raw = s.kafka.raw_topic
        router = start_router(
            KAFKA_RAW_TOPIC=raw, KAFKA_DEAD_LETTER_TOPIC=s.kafka.dead_letter_topic
        )
        producer = kafka_clients.producer(s.kafka, **{"transactional.id": unique_id("txn")})
        producer.init_transactions(30)
        for kept, n in ((True, 5), (False, 3)):
            producer.begin_transaction()
            for _ in range(n):
                producer.produce(raw, orjson.dumps(event(c, properties={"kept": kept})))
            assert producer.flush(30) == 0  # in the log before the abort, not purged
            if kept:
                producer.commit_transaction(30)
            else:
                producer.abort_transaction(30)
        ends = {0: 5 + 1 + 3 + 1}  # each transaction ends with a marker
        wait_for(lambda: end_offsets(s, raw) == ends, 30, what="both markers written")
        group = router.settings.group_id
        wait_for(
            lambda: committed_offsets(s, group, raw) == ends,
            30,
            what="the committed offset at the log end, past the abort marker",
        )
    assert counts(stack, c.database) == (5, 5)
    assert (
        ch_scalar(
            stack,
            f"SELECT countIf(event_properties LIKE '%false%') FROM `{c.database}`.events_base",
        )
        == 0
    )
