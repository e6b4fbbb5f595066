"""10,000 hostile and fuzzed messages through the real router (issue 10).

Random bytes, mutated valid events, forged headers of every kind (replay headers unsigned,
signed with another key, malformed, duplicated), other tenants' keys, Unicode look-alike
ids and key hashes, deep nesting, oversized messages. On private topics, so every message
and every dead letter seen is this test's. It proves: the router stays up; every message
has exactly one outcome per event, matched by its Kafka coordinates (rows in ClickHouse and
dead letters); no row lands in a tenant other than the one its key authenticates.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from analytics_core import kafka_clients
from analytics_core.clickhouse import http_client
from analytics_core.dead_letter import REPLAY_FIELDS, DeadLetter, ReplayKeys, replay_headers
from analytics_core.event_contract import Origin
from analytics_core.reasons import Reason
from analytics_core.settings import Settings
from tests.conftest import ClientFixture, wait_for
from tests.integration.router_support import (
    end_offsets,
    letters_between,
    private_topics,
    produce_with_raw_header_name,
)

pytestmark = pytest.mark.integration
MESSAGES = 10_000
SEED = 20261127
BOM = b"\xef\xbb\xbf"
LONE = b"\\ud83d"  # an escaped lone surrogate: a string cut inside an emoji


@dataclass
class Sent:
    value: bytes
    headers: list[tuple[str, bytes]] | None


def _event(rng: random.Random, client: ClientFixture, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "client_id": client.client_id,
        "api_key": client.api_key,
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "event_name": rng.choice(["page_view", "click", "signup", "é"]),
        "timestamp": rng.randrange(0, 10_413_791_999_999),
        "user_id": f"u{rng.randrange(1000)}",
        "properties": {"n": rng.randrange(10**30), "f": rng.random(), "s": "x" * rng.randrange(50)},
    }
    doc.update(over)
    return doc


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(5)
        i = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(i, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            del data[i : i + rng.randrange(1, 20)]
        elif op == 2:
            data[i:i] = rng.choice([b"[", b"{", b'"', b"\\", b"\xff", b"\x00", b"1e999", b"null"])
        elif op == 3:
            data = data[:i]
        else:
            data[i:i] = rng.randbytes(rng.randrange(1, 8))
    return bytes(data)


def hostile_messages(
    a: ClientFixture, b: ClientFixture, raw_topic: str, keys: ReplayKeys
) -> Iterator[Sent]:
    rng = random.Random(SEED)
    other = ReplayKeys(b"not-the-router-key-" + b"x" * 20)

    def dumps(doc: Any) -> bytes:
        return json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()

    def letter(value: bytes, batch_index: int | None = None) -> DeadLetter:
        return DeadLetter(
            Reason.CLIENT_INACTIVE, "", Origin(raw_topic, rng.randrange(3), rng.randrange(10**6)),
            Origin(raw_topic, 0, 0), batch_index, a.client_id, None, "2026-01-01T00:00:00Z",
            rng.randrange(1, 5), "t",
        )  # fmt: skip

    kinds: list[Callable[[], Sent]] = [
        lambda: Sent(rng.randbytes(rng.randrange(0, 300)), None),
        lambda: Sent(_mutate(rng, dumps(_event(rng, rng.choice([a, b])))), None),
        lambda: Sent(dumps(_event(rng, a)), None),
        lambda: Sent(dumps(_event(rng, b)), None),
        lambda: Sent(dumps(_event(rng, a, api_key=b.api_key)), None),  # B's key for A
        lambda: Sent(
            dumps(
                _event(
                    rng,
                    b,
                    api_key=None,
                    api_key_hash=hashlib.sha256(a.api_key.encode()).hexdigest(),
                )
            ),
            None,
        ),
        lambda: Sent(dumps(_event(rng, a, client_id=a.client_id.replace("a", "\u0430"))), None),
        lambda: Sent(dumps(_event(rng, a, api_key=None, api_key_hash="\u0660" * 64)), None),
        lambda: Sent(
            dumps([_event(rng, rng.choice([a, b])) for _ in range(rng.randrange(1, 6))]), None
        ),
        lambda: Sent(
            dumps([_event(rng, a), 7, None, _event(rng, b, api_key="wrong"), "x", []]), None
        ),
        lambda: Sent(
            b'{"client_id":"'
            + a.client_id.encode()
            + b'","properties":'
            + b"[" * rng.randrange(100, 3000)
            + b"]" * 10
            + b"}",
            None,
        ),
        lambda: Sent(dumps(_event(rng, a, properties={"blob": "y" * 600_000})), None),
        lambda: Sent(b"[" * 999_000, None) if rng.random() < 0.02 else Sent(b"[]", None),
        # Forged headers: unsigned, signed with another key, stray, duplicated, malformed.
        lambda: Sent(
            dumps(_event(rng, a)),
            [(k, str(rng.randrange(-5, 10**25)).encode()) for k in REPLAY_FIELDS],
        ),
        lambda: Sent(
            (v := dumps(_event(rng, a))),
            replay_headers(letter(v, rng.choice([None, 0, 7])), v, other),
        ),
        lambda: Sent(
            dumps(_event(rng, b)), [(rng.choice([*REPLAY_FIELDS, "replay-x"]), rng.randbytes(8))]
        ),
        lambda: Sent(
            (v := dumps(_event(rng, a))),
            [*replay_headers(letter(v), v, keys), ("replay-attempt", b"1")],
        ),
        lambda: Sent(
            (v := dumps(_event(rng, a))),
            replay_headers(replace(letter(v), attempt=70_000), v, keys),
        ),
        lambda: Sent(dumps(_event(rng, a)), [("traceparent", rng.randbytes(30)), ("x", b"")]),
        # Repairable text (analytics_core.json_text): routed, never dead-lettered.
        lambda: Sent(BOM + dumps(_event(rng, a)), None),
        lambda: Sent(dumps(_event(rng, b, event_name="cut ~")).replace(b"~", LONE), None),
    ]
    for _ in range(MESSAGES):
        yield rng.choice(kinds)()


def _events_in(value: bytes) -> int:
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):
        return 1
    return len(doc) if isinstance(doc, list) else 1


def _authenticates(value: bytes, batch_index: int, client: ClientFixture) -> bool:
    doc = json.loads(value)
    ev = doc[batch_index] if isinstance(doc, list) else doc
    key_hash = hashlib.sha256(client.api_key.encode()).hexdigest()
    return bool(
        ev["client_id"] == client.client_id
        and (ev.get("api_key") == client.api_key or ev.get("api_key_hash", "").lower() == key_hash)
    )


@pytest.fixture
def hostile_topics(stack: Settings) -> Iterator[Settings]:
    with private_topics(stack, "hostile") as settings:
        yield settings


def test_ten_thousand_hostile_messages_each_get_exactly_one_outcome_in_the_right_tenant(
    hostile_topics: Settings,
    make_client,
    start_router,
) -> None:
    s = hostile_topics
    a, b = make_client("hosa"), make_client("hosb")
    router = start_router(
        KAFKA_RAW_TOPIC=s.kafka.raw_topic, KAFKA_DEAD_LETTER_TOPIC=s.kafka.dead_letter_topic
    )
    # First, valid events under a header name that is not UTF-8: if they stopped the
    # router, nothing after them would be routed.
    bad_name = b"\xff\xfe-name"
    unreadable_values = [json.dumps(_event(random.Random(i), a)).encode() for i in range(20)]
    unreadable_at = produce_with_raw_header_name(s, s.kafka.raw_topic, unreadable_values, bad_name)
    unreadable = set(unreadable_at)
    producer = kafka_clients.producer(s.kafka, **{"linger.ms": 20})
    sent: dict[tuple[int, int], Sent] = {}
    failed: list[str] = []

    def delivery(item: Sent) -> Callable[[Any, Any], None]:
        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(str(err))
            else:
                sent[(msg.partition(), msg.offset())] = item

        return delivered

    for item in hostile_messages(a, b, s.kafka.raw_topic, s.replay.keys()):
        while True:
            try:
                producer.produce(
                    s.kafka.raw_topic,
                    item.value,
                    headers=item.headers,  # type: ignore[arg-type]
                    on_delivery=delivery(item),
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0 and not failed and len(sent) == MESSAGES
    assert len(unreadable) == 20 and not unreadable & set(sent)
    for coords, value in zip(unreadable_at, unreadable_values, strict=True):
        sent[coords] = Sent(value, None)

    def outcomes() -> tuple[
        dict[tuple[int, int], list[int | None]], list[tuple[str, int, int, int]]
    ]:
        ch = http_client(s.clickhouse)
        try:
            rows = [
                (c.client_id, int(p), int(o), int(i))
                for c in (a, b)
                for p, o, i in ch.query(
                    "SELECT kafka_partition, kafka_offset, batch_index"
                    f" FROM `{c.database}`.events_base WHERE kafka_topic = {{t:String}}",
                    parameters={"t": s.kafka.raw_topic},
                ).result_rows
            ]
        finally:
            ch.close()
        got: dict[tuple[int, int], list[int | None]] = {}
        for _client, p, o, i in rows:
            got.setdefault((p, o), []).append(i)
        for dl, _v in letters_between(s, {}, end_offsets(s, s.kafka.dead_letter_topic)):
            assert dl.source.topic == s.kafka.raw_topic
            got.setdefault((dl.source.partition, dl.source.offset), []).append(dl.batch_index)
        return got, rows

    wait_for(lambda: set(outcomes()[0]) >= set(sent), 240, every_s=3, what="every message")
    time.sleep(3)  # the rest of a batch, or anything extra (a duplicate), would arrive now
    got, rows = outcomes()
    assert router.thread is not None and router.thread.is_alive()
    assert set(got) == set(sent)
    reasons = Counter[str]()
    for coords, indexes in got.items():
        value = sent[coords].value
        if None in indexes:
            assert indexes == [None], (coords, indexes, value[:200])  # whole message: one fate
        else:
            found = sorted(i for i in indexes if i is not None)
            assert found == list(range(_events_in(value))), (coords, indexes, value[:200])
    repairable = {c for c, m in sent.items() if m.value.startswith(BOM) or LONE in m.value}
    stored = {(p, o) for _c, p, o, _i in rows}
    assert len(repairable) > 500 and repairable <= stored
    for client_id, p, o, i in rows:
        client = a if client_id == a.client_id else b
        assert _authenticates(sent[(p, o)].value, i, client), (client_id, sent[(p, o)].value[:300])
        assert sent[(p, o)].headers is None or not any(
            k.startswith("replay-") for k, _ in sent[(p, o)].headers or []
        )
    for dl, _v in letters_between(s, {}, end_offsets(s, s.kafka.dead_letter_topic)):
        reasons[dl.reason.value] += 1
        coords = (dl.source.partition, dl.source.offset)
        assert (dl.reason is Reason.INVALID_HEADERS) == (coords in unreadable), (dl, coords)
    assert reasons[Reason.INVALID_HEADERS.value] == len(unreadable)
    print(f"hostile messages: {MESSAGES}, rows {len(rows)}, dead letters by reason {dict(reasons)}")
    assert len(rows) > 1000 and reasons[Reason.INVALID_REPLAY.value] > 500
    assert reasons[Reason.UNPROCESSABLE.value] == 0  # nothing fell through to the last resort
