"""Per-client quotas: stored in PostgreSQL, enforced across capture processes through Redis,
429 + Retry-After, other clients unaffected; Redis down keeps events flowing (per-process
limits)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from redis import Redis

from analytics_core import pg
from analytics_core.quotas import Quota, StoredQuota, get_quota, get_quotas, set_quota
from analytics_core.settings import Settings
from capture.quota import (
    BUCKET_PREFIX,
    LEASE_TTL_S,
    Admitted,
    OverQuota,
    QuotaBook,
    QuotaOutcome,
    RateLimiter,
)
from capture.redis_clients import sync_client
from devstack import api
from tests.conftest import ClientFixture
from tests.integration.capture.conftest import CaptureProcess

pytestmark = pytest.mark.integration


DEFAULT = Quota(2000.0, 20_000)


@pytest.fixture
def book(stack: Settings) -> Iterator[QuotaBook]:
    """The quota book a capture process reads through (the registry's quotas, cached)."""
    quotas = QuotaBook(stack.postgres, DEFAULT, cache_s=60)
    yield quotas
    quotas.close()


@pytest.fixture
def buckets(stack: Settings) -> Iterator[Redis]:
    """A Redis client to read the shared buckets with."""
    client = sync_client(stack.redis)
    yield client
    client.close()


@pytest.fixture
def registry() -> Iterator[ThreadPoolExecutor]:
    """The registry thread the limiters read quotas on."""
    thread = ThreadPoolExecutor(1)
    yield thread
    thread.shutdown()


def batch_of(n: int) -> bytes:
    return json.dumps(
        {"batch": [{"type": "track", "event": "q", "userId": "u"} for _ in range(n)]}
    ).encode()


def give_quota(settings: Settings, client_id: str, rate: float, burst: int) -> None:
    conn = pg.connect(settings.postgres)
    try:
        set_quota(conn, client_id, rate, burst)
        stored = get_quota(conn, client_id)
        assert stored is not None and (stored.events_per_s, stored.burst) == (rate, burst)
    finally:
        conn.close()


def test_quota_is_shared_by_two_capture_processes_and_spares_other_clients(
    stack: Settings,
    make_client,
    start_capture,  # type: ignore[no-untyped-def]
) -> None:
    limited: ClientFixture = make_client("qlim")
    other: ClientFixture = make_client("qoth")
    give_quota(stack, limited.client_id, rate=1.0, burst=100)
    first: CaptureProcess = start_capture()
    second: CaptureProcess = start_capture()
    statuses = []
    for i in range(20):  # 200 events alternately through both processes, in about a second
        cap = first if i % 2 == 0 else second
        r = cap.post("/v1/batch", batch_of(10), auth=(limited.api_key, ""))
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["code"] == "rate_limited"
    # The burst (100) is shared: ~10 requests pass in total, not ~10 per process.
    assert 9 <= statuses.count(200) <= 11, statuses
    assert statuses.count(429) == 20 - statuses.count(200)
    for cap in (first, second):
        assert cap.post("/v1/batch", batch_of(50), auth=(other.api_key, "")).status_code == 200
    refused = first.metric("capture_quota_refusals_total", client_id=limited.client_id)
    refused += second.metric("capture_quota_refusals_total", client_id=limited.client_id)
    assert refused == statuses.count(429)


def test_a_refused_clients_body_is_not_read_and_its_connection_stays_usable(
    stack: Settings,
    make_client,
    start_capture,  # type: ignore[no-untyped-def]
) -> None:
    """Inside its 429's Retry-After, or with a key already known to be wrong, a request is
    answered from its headers: its body (1 MB of junk here) is dropped, never parsed or
    counted (the byte counter does not move, and junk would be a 400 if it were parsed),
    and the same keep-alive connection then carries another client's request."""
    limited: ClientFixture = make_client("qearly")
    other: ClientFixture = make_client("qearlyok")
    give_quota(stack, limited.client_id, rate=1.0, burst=10)
    cap: CaptureProcess = start_capture()
    session = requests.Session()
    url = cap.url + "/v1/batch"
    assert session.post(url, data=batch_of(10), auth=(limited.api_key, "")).status_code == 200
    assert session.post(url, data=batch_of(10), auth=(limited.api_key, "")).status_code == 429
    assert session.post(url, data=b"x", auth=("no-such-key", "")).status_code == 401
    read_before = cap.metric("capture_request_bytes_total", route="segment:batch")
    junk = b"\x00" * 1_000_000
    for _ in range(3):
        over = session.post(url, data=junk, auth=(limited.api_key, ""))
        assert over.status_code == 429 and over.json()["code"] == "rate_limited"
        assert int(over.headers["Retry-After"]) >= 1
        wrong = session.post(url, data=junk, auth=("no-such-key", ""))
        assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_write_key"
        ok = session.post(url, data=batch_of(5), auth=(other.api_key, ""))
        assert ok.status_code == 200 and ok.json()["accepted"] == 5
    read = cap.metric("capture_request_bytes_total", route="segment:batch") - read_before
    assert read == 3 * len(batch_of(5))  # the good requests' bodies, none of the junk
    assert cap.metric("capture_quota_refusals_total", client_id=limited.client_id) == 4
    assert cap.alive()


def _read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response from `sock`: its status and body (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, f"connection closed before an answer: {data!r}"
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    while len(body) < length:
        part = sock.recv(65536)
        assert part, "connection closed in the middle of an answer"
        body += part
    return int(lines[0].split()[1]), body


def _post_head(port: int, write_key: str, length: int, path: str = "/v1/batch") -> bytes:
    token = base64.b64encode(f"{write_key}:".encode()).decode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Basic {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_a_refused_body_that_arrives_slowly_still_gets_its_answer_and_keeps_the_connection(
    stack: Settings,
    make_client,
    start_capture,  # type: ignore[no-untyped-def]
) -> None:
    """A refused request whose body is still arriving when the answer is ready (a slow
    uplink, or a large body): the client can send all of it, reads its 401 or 429 (or the
    404 or 405 of a wrong path), and the same connection then carries the next request.
    An answer sent while the body is left unread in the socket, followed by a close, is a
    reset the client sees instead of its answer: it would retry a wrong key, or retry at
    once instead of after Retry-After."""
    limited: ClientFixture = make_client("qslow")
    other: ClientFixture = make_client("qslowok")
    give_quota(stack, limited.client_id, rate=1.0, burst=10)
    cap: CaptureProcess = start_capture()
    url = cap.url + "/v1/batch"
    assert requests.post(url, data=batch_of(10), auth=(limited.api_key, "")).status_code == 200
    assert requests.post(url, data=batch_of(10), auth=(limited.api_key, "")).status_code == 429
    assert requests.post(url, data=b"x", auth=("no-such-key", "")).status_code == 401
    junk = b"\x00" * 1_000_000
    good = batch_of(5)
    cases = (
        ("/v1/batch", "no-such-key", 401),
        ("/v1/batch", limited.api_key, 429),
        ("/v1/no-such-path", other.api_key, 404),
        ("/healthz", other.api_key, 405),
    )
    for path, write_key, expected in cases:
        with socket.create_connection(("127.0.0.1", cap.port), timeout=20) as sock:
            sock.sendall(_post_head(cap.port, write_key, len(junk), path) + junk[:16_384])
            time.sleep(0.5)
            sock.sendall(junk[16_384:])
            status, body = _read_answer(sock)
            assert status == expected, body
            sock.sendall(_post_head(cap.port, other.api_key, len(good)) + good)
            status, body = _read_answer(sock)
            assert status == 200 and json.loads(body)["accepted"] == 5, body
    assert cap.alive()


def test_redis_down_keeps_accepting_with_per_process_limits(
    stack: Settings,
    make_client,
    start_capture,
    private_services,  # type: ignore[no-untyped-def]
) -> None:
    client: ClientFixture = make_client("qred")
    give_quota(stack, client.client_id, rate=0.1, burst=30)
    private, env = private_services("redis")
    cap: CaptureProcess = start_capture(REDIS_PORT=env["REDIS_PORT"])
    assert cap.post("/v1/batch", batch_of(10), auth=(client.api_key, "")).status_code == 200
    api.stop_service(private, "redis")
    statuses = [
        cap.post("/v1/batch", batch_of(10), auth=(client.api_key, "")).status_code for _ in range(6)
    ]
    # Durability first: Redis down never refuses events by itself; the process still
    # enforces the client's quota with its own bucket (30 events of burst).
    assert statuses[:3] == [200, 200, 200], statuses
    assert 429 in statuses, statuses
    assert cap.alive()


def test_leases_keep_redis_off_the_request_path_and_the_bucket_shared(
    stack: Settings,
    book: QuotaBook,
    registry: ThreadPoolExecutor,
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    """Two limiters (two processes' worth) on one client: most requests are admitted from
    a lease without asking Redis, together they never admit more than the shared bucket
    allows, and an unspent lease goes back to the bucket."""
    busy: ClientFixture = make_client("qlease")
    idle: ClientFixture = make_client("qback")
    roomy: ClientFixture = make_client("qroomy")
    for c in (busy, idle):
        give_quota(stack, c.client_id, rate=100.0, burst=1000)  # leases of 10 tokens
    give_quota(stack, roomy.client_id, rate=1e6, burst=10**6)
    first, second = (RateLimiter(stack.redis, book, registry, lease_s=0.1) for _ in range(2))
    redis = sync_client(stack.redis)

    def bucket(client_id: str) -> tuple[float, float]:
        tokens, ts = redis.hmget(BUCKET_PREFIX + client_id, ["tokens", "ts"])
        return float(tokens), float(ts)

    async def scenario() -> None:
        started = time.monotonic()
        admitted = 0
        for i in range(3000):  # one event per request, alternately through both
            limiter = first if i % 2 == 0 else second
            if isinstance(await limiter.take(busy.client_id, 1), Admitted):
                admitted += 1
        elapsed = time.monotonic() - started
        # The bucket held 1000 and refilled at 100/s; each limiter may still hold an
        # unspent lease, taken from the same bucket.
        assert 1000 - 2 * 10 <= admitted <= 1000 + 100 * elapsed + 1, (admitted, elapsed)
        calls = first.redis_calls + second.redis_calls
        assert calls * 5 <= admitted, calls  # a Redis call per ~10 events, not per event

        # An unspent lease goes back with the client's next call once it has expired.
        assert isinstance(await first.take(idle.client_id, 1), Admitted)
        assert first.leased(idle.client_id) == 10
        assert isinstance(await second.take(idle.client_id, 900), Admitted)  # drain it
        tokens_before, ts_before = bucket(idle.client_id)
        await asyncio.sleep(LEASE_TTL_S + 0.2)
        assert isinstance(await first.take(idle.client_id, 1), Admitted)
        tokens_after, ts_after = bucket(idle.client_id)
        refill = (ts_after - ts_before) * 100.0 / 1000
        given_back = tokens_after + 1 + first.leased(idle.client_id) - tokens_before - refill
        assert abs(given_back - 10) < 0.01, given_back

        # Many requests of one client at once (a busy SDK): one Redis call at a time, no
        # lease lost to a race, so a client far under its quota is never refused.
        outcomes = []
        for _ in range(20):
            batch = [first.take(roomy.client_id, 1) for _ in range(64)]
            outcomes += await asyncio.gather(*batch)
            await asyncio.sleep(0.06)
        assert all(isinstance(o, Admitted) for o in outcomes)
        await first.close()
        await second.close()

    try:
        asyncio.run(scenario())
    finally:
        redis.close()


def test_the_quotas_of_several_clients_are_read_together_unknown_ones_get_the_default(
    stack: Settings,
    book: QuotaBook,
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    own: ClientFixture = make_client("qown", active=False)
    plain: ClientFixture = make_client("qpln", active=False)
    give_quota(stack, own.client_id, rate=250.0, burst=900)
    ids = [own.client_id, plain.client_id, "no-such-client"]
    conn = pg.connect(stack.postgres)
    try:
        assert get_quotas(conn, ids) == {
            own.client_id: StoredQuota(own.client_id, 250.0, 900),
            plain.client_id: StoredQuota(plain.client_id, None, None),
        }
    finally:
        conn.close()
    assert book.load_many(ids) == {
        own.client_id: Quota(250.0, 900),
        plain.client_id: DEFAULT,
        "no-such-client": DEFAULT,
    }
    assert book.cached(own.client_id) == (Quota(250.0, 900), True)
    assert book.cached(plain.client_id) == (DEFAULT, True)


def at_once(take: Coroutine[Any, Any, QuotaOutcome]) -> QuotaOutcome:
    """The outcome of a `take` that answers without waiting for anything (Redis)."""
    try:
        take.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    take.close()
    raise AssertionError("the request waited (for Redis)")


def test_a_busy_clients_lease_is_topped_up_ahead_so_its_requests_never_wait_for_redis(
    stack: Settings,
    book: QuotaBook,
    registry: ThreadPoolExecutor,
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    """A lease is topped up in the background at half its life or when a fifth is left:
    three lease lifetimes of steady traffic, six times the lease, and no request waits."""
    busy: ClientFixture = make_client("qahead", active=False)
    give_quota(stack, busy.client_id, rate=1000.0, burst=100_000)  # leases of 100 tokens
    limiter = RateLimiter(stack.redis, book, registry, lease_s=0.1)

    async def scenario() -> None:
        assert isinstance(await limiter.take(busy.client_id, 1), Admitted)  # waits: no lease
        assert limiter.leased(busy.client_id) == 100 and limiter.redis_calls == 1
        started = time.monotonic()
        for _ in range(600):
            assert isinstance(at_once(limiter.take(busy.client_id, 1)), Admitted)
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
        assert elapsed > 3 * LEASE_TTL_S
        # At most one top-up per 80 events (down to the low mark) or per half-life (0.4 s
        # at least), and at least one per 100 events: one call per top-up.
        most = 1 + 600 / 80 + elapsed / (0.4 * LEASE_TTL_S) + 1
        assert 1 + 6 <= limiter.redis_calls <= most, (limiter.redis_calls, elapsed)
        assert 20 <= limiter.leased(busy.client_id) <= 100
        await limiter.close()

    asyncio.run(scenario())


def test_a_lease_with_nothing_left_to_lease_is_not_topped_up_again_and_again(
    stack: Settings,
    book: QuotaBook,
    registry: ThreadPoolExecutor,
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    """When the shared bucket is empty a top-up gets nothing: the lease then runs out and
    the next request asks Redis with its cost (a 429), instead of a Redis call per request."""
    tight: ClientFixture = make_client("qempty", active=False)
    # Refills one token in 100 s: the bucket stays empty for the whole test.
    give_quota(stack, tight.client_id, rate=0.01, burst=1000)
    first = RateLimiter(stack.redis, book, registry, lease_s=10_000.0)  # leases of 100
    other = RateLimiter(stack.redis, book, registry, lease_s=0.0)

    async def scenario() -> None:
        assert isinstance(await first.take(tight.client_id, 1), Admitted)
        assert first.leased(tight.client_id) == 100
        assert isinstance(await other.take(tight.client_id, 899), Admitted)  # empties it
        for _ in range(81):  # down to 19 tokens: below the low mark (20)
            assert isinstance(at_once(first.take(tight.client_id, 1)), Admitted)
        await asyncio.sleep(0.2)  # the top-up ran and found nothing to lease
        calls = first.redis_calls
        for _ in range(19):
            assert isinstance(at_once(first.take(tight.client_id, 1)), Admitted)
        await asyncio.sleep(0.2)
        assert first.redis_calls == calls  # no more top-ups of this lease
        assert isinstance(await first.take(tight.client_id, 1), OverQuota)
        await first.close()
        await other.close()

    asyncio.run(scenario())


def test_the_top_ups_of_many_busy_clients_share_redis_calls(
    stack: Settings, book: QuotaBook, registry: ThreadPoolExecutor
) -> None:
    """Thirty busy clients: their leases are renewed for three lease lifetimes without a
    request waiting, in a handful of Redis calls rather than one per client per
    half-life (the clients are not in the registry: they get the default quota, leases of
    200 tokens)."""
    clients = [f"qmany-{uuid.uuid4().hex[:8]}-{i}" for i in range(30)]
    limiter = RateLimiter(stack.redis, book, registry, lease_s=0.1)

    async def scenario() -> None:
        for client_id in clients:
            assert isinstance(await limiter.take(client_id, 1), Admitted)  # no lease yet
        assert limiter.redis_calls == len(clients)
        started = time.monotonic()
        while time.monotonic() - started < 3 * LEASE_TTL_S:
            for client_id in clients:
                assert isinstance(at_once(limiter.take(client_id, 1)), Admitted)
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        top_up_calls = limiter.redis_calls - len(clients)
        # Each lease is renewed at least once per half-life (at most half of LEASE_TTL_S):
        # one call per top-up would be len(clients) * elapsed / (0.5 * LEASE_TTL_S), some
        # 180. Gathered, the leases due within TOP_UP_GATHER_S of each other share a call
        # (about 25 calls here); a third of that 180 is the bound.
        one_each = len(clients) * elapsed / (0.5 * LEASE_TTL_S)
        assert 3 <= top_up_calls <= one_each / 3, (top_up_calls, elapsed)
        assert all(limiter.leased(c) > 0 for c in clients)
        await limiter.close()

    asyncio.run(scenario())


def test_one_script_call_answers_each_bucket_from_its_own_state(
    stack: Settings, book: QuotaBook, registry: ThreadPoolExecutor, buckets: Redis
) -> None:
    """Several buckets in one call, in order: a fresh one leases what is asked, an emptied
    one admits a top-up of cost 0 but leases nothing, one asked more than it holds is
    refused with its wait; each bucket keeps its own tokens."""
    fresh, empty, short = (f"qcall-{uuid.uuid4().hex[:8]}-{n}" for n in range(3))
    limiter = RateLimiter(stack.redis, book, registry, lease_s=0.1)
    slow = Quota(0.01, 1000)  # refills a token in 100 s

    async def scenario() -> None:
        assert await limiter._ask_redis([(empty, slow, 1000, 0, 0)]) == [(True, 0, 0)]
        answers = await limiter._ask_redis(
            [(fresh, slow, 0, 10, 0), (empty, slow, 0, 10, 0), (short, Quota(1.0, 5), 7, 0, 0)]
        )
        assert limiter.redis_calls == 2
        assert answers is not None
        assert answers[0] == (True, 0, 10)
        assert answers[1][:1] == (True,) and answers[1][2] == 0
        # `short` holds its burst (5) and is asked for 7: it has to wait for nothing more
        # (the cost is capped at the burst), so it is admitted and goes into debt.
        assert answers[2] == (True, 0, 0)
        tokens = [float(buckets.hget(BUCKET_PREFIX + c, "tokens")) for c in (fresh, empty, short)]
        assert tokens[0] == pytest.approx(990, abs=0.1)
        assert tokens[1] == pytest.approx(0, abs=0.1)
        assert tokens[2] == pytest.approx(-2, abs=0.1)
        refused = await limiter._ask_redis(
            [(fresh, slow, 1, 0, 0), (short, Quota(1.0, 5), 1, 0, 0)]
        )
        assert refused is not None and refused[0] == (True, 0, 0)
        admitted, wait_ms, leased = refused[1]
        assert not admitted and leased == 0 and 2_500 <= wait_ms <= 3_000  # 3 tokens at 1/s
        await limiter.close()

    asyncio.run(scenario())


def test_requests_that_must_ask_redis_at_the_same_time_share_one_call(
    stack: Settings, book: QuotaBook, registry: ThreadPoolExecutor, buckets: Redis
) -> None:
    """Forty clients' first requests at once (a process just started): one script call
    answers all of them, each from its own bucket; the one asking more than its burst is
    admitted into debt (as alone) and its next request refused."""
    clients = [f"qfirst-{uuid.uuid4().hex[:8]}-{i}" for i in range(40)]
    over = clients[7]
    limiter = RateLimiter(stack.redis, book, registry, lease_s=0.1)

    async def scenario() -> None:
        # Their quotas first (one PostgreSQL query for all): only script calls are counted.
        await asyncio.gather(*(limiter.quota(c) for c in clients))
        costs = [DEFAULT.burst + 10_000 if c == over else 1 for c in clients]
        outcomes = await asyncio.gather(
            *(limiter.take(c, cost) for c, cost in zip(clients, costs, strict=True))
        )
        assert limiter.redis_calls == 1
        assert all(isinstance(o, Admitted) for o in outcomes)
        for client_id in clients:
            tokens = float(buckets.hget(BUCKET_PREFIX + client_id, "tokens"))
            if client_id == over:
                assert limiter.leased(client_id) == 0
                assert tokens == pytest.approx(-10_000, abs=1)
            else:
                assert limiter.leased(client_id) == 200  # 0.1 s of the default 2 000/s
                assert tokens == pytest.approx(DEFAULT.burst - 1 - 200, abs=1)
        refused, admitted = await asyncio.gather(limiter.take(over, 1), limiter.take(clients[0], 1))
        assert isinstance(refused, OverQuota) and isinstance(admitted, Admitted)
        await limiter.close()

    asyncio.run(scenario())
