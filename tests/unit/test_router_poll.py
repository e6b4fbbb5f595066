"""The router's hot path for one poll (router.poll): the common path, what it leaves to the
reference path, and its bookkeeping (pure: no broker, no servers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

import router.poll
from analytics_core.clients import LookupResult, RegistryUnavailable
from analytics_core.reasons import Reason
from router.accounting import ROUTED
from router.rows import read_row
from tests.unit.router_messages import (
    TOPIC,
    FakeMessage,
    assert_paths_agree,
    lookup,
    poll_once,
)


def event(n: int, **changes: Any) -> dict[str, Any]:
    return {
        "client_id": "acme",
        "api_key": "k-acme",
        "event_id": f"00000000-0000-4000-8000-{n:012d}",
        "event_name": "page_view",
        "timestamp": 1795771200123,
        "sent_at": 1795771200456,
        "user_id": f"u-{n}",
        "properties": {"url": f"/p/{n}"},
        **changes,
    }


def msg(value: object, partition: int = 0, offset: int = 0, **kw: Any) -> FakeMessage:
    return FakeMessage(orjson.dumps(value), partition, offset, **kw)


@pytest.fixture
def reference_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Offsets of the messages the reference path (process_message) had to decide."""
    calls: list[int] = []
    real = router.poll.process_message

    def spy(raw: Any, *args: Any) -> Any:
        calls.append(raw.offset)
        return real(raw, *args)

    monkeypatch.setattr(router.poll, "process_message", spy)
    return calls


def test_common_events_are_routed_without_the_reference_path(reference_calls: list[int]) -> None:
    msgs = [
        msg(event(1), offset=10),
        msg([event(2), event(3, client_id="beta", api_key="k-beta")], offset=11),  # batch
        msg(event(4, api_key=None, api_key_hash=None, anonymous_id="anon"), offset=12),
    ]
    result, buffers, tracker = poll_once(msgs)
    assert reference_calls == [12]  # no credential at all: the reference path decides
    assert (result.messages, result.events) == (3, 4)
    acme, beta = buffers.open["client_acme"], buffers.open["client_beta"]
    assert list(acme.offsets) == [10, 11] and list(acme.batch_indexes) == [0, 0]
    assert list(beta.offsets) == [11] and list(beta.batch_indexes) == [1]
    assert list(acme.produced_ms) == [1795771200456] * 2  # sent_at: the latency origin
    assert [letter.letter.reason for letter in result.letters] == [Reason.SCHEMA_VIOLATION]
    row = read_row(acme.lines()[1])
    assert (row.event_id, row.user_id, row.properties) == (
        "00000000-0000-4000-8000-000000000002",
        "u-2",
        b'{"url":"/p/2"}',
    )
    # One segment for the poll's run of partition 0, three rows and one letter to wait for.
    [seg] = acme.segments()
    assert (seg.first, seg.next, seg.messages, seg.events, seg.left) == (10, 13, 3, 4, 4)
    assert acme.segments() == {seg: 2} and beta.segments() == {seg: 1}
    assert tracker.committable() == {(TOPIC, 0): 10}
    seg.done(2, "acme", ROUTED)
    seg.done(1, "beta", ROUTED)
    tracker.ack((TOPIC, 0), 12, "acme", "dead_lettered", "schema_violation")
    assert tracker.committable() == {(TOPIC, 0): 13}


def test_a_lone_surrogate_is_routed_by_the_reference_path(reference_calls: list[int]) -> None:
    """The fast decoder refuses `"\\ud83d"`; the reference path reads it as U+FFFD and
    routes the event instead of dead-lettering it as invalid_json."""
    raw = orjson.dumps(event(1, event_name="cut X")).replace(b"cut X", b"cut \\ud83d")
    result, buffers, _ = poll_once([FakeMessage(raw, 0, 21)])
    assert reference_calls == [21] and not result.letters
    row = read_row(buffers.open["client_acme"].lines()[0])
    assert row.event_name == "cut \ufffd"


def test_each_client_is_looked_up_once_per_poll() -> None:
    asked: list[str] = []

    def counting(client_id: str) -> LookupResult:
        asked.append(client_id)
        return lookup(client_id)

    msgs = [msg(event(i), partition=i % 3, offset=i) for i in range(30)]
    msgs.append(msg(event(99, client_id="ghost"), offset=99))
    msgs.append(msg(event(98, client_id="ghost"), offset=98))
    result, buffers, _ = poll_once(msgs, counting)
    assert sorted(asked) == ["acme", "ghost"]
    assert len(buffers.open["client_acme"]) == 30
    assert [letter.letter.reason for letter in result.letters] == [Reason.UNKNOWN_CLIENT] * 2


def test_a_registry_outage_rewinds_its_partition_and_the_others_go_on() -> None:
    def down_for_beta(client_id: str) -> LookupResult:
        return (
            RegistryUnavailable("redis and postgres down")
            if client_id == "beta"
            else lookup(client_id)
        )

    msgs = [
        msg(event(1), partition=0, offset=5),
        msg(event(2, client_id="beta", api_key="k-beta"), partition=0, offset=6),
        msg(event(3), partition=0, offset=7),  # after the rewind point: left for later
        msg(event(4), partition=1, offset=50),
    ]
    result, buffers, tracker = poll_once(msgs, down_for_beta)
    assert [(r.partition, r.offset) for r in result.rewinds] == [(0, 6)]
    assert sorted(buffers.open["client_acme"].offsets) == [5, 50]
    assert tracker.committable() == {(TOPIC, 0): 5, (TOPIC, 1): 50}
    assert tracker.segment_of((TOPIC, 0), 6) is None  # not counted: it is read again


def test_a_failure_half_way_through_a_message_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real: Callable[..., bytes] = router.poll.encode_row
    seen = []

    def fails_on_the_second(*args: Any) -> bytes:
        seen.append(args[0])
        if len(seen) == 2:
            raise OverflowError("boom")
        return real(*args)

    monkeypatch.setattr(router.poll, "encode_row", fails_on_the_second)
    result, buffers, _ = poll_once([msg([event(1), event(2)], offset=3)])
    # The reference path decided the message (its rows encoded by router.rows itself).
    assert list(buffers.open["client_acme"].batch_indexes) == [0, 1]
    assert result.events == 2 and not result.unprocessable


@pytest.mark.parametrize(
    "value",
    [
        event(1, event_id=None),  # derived id
        event(1, event_id="ABCDEF00-0000-4000-8000-0000000000AA"),  # lower-cased
        event(1, sent_at=None),  # Kafka timestamp as the latency origin
        event(1, sent_at=0),  # none at all: NULL
        event(1, timestamp="2026-11-27T10:00:00.5+01:00"),
        event(1, event_name=None, event_type="alias"),
        event(1, user_id=None, anonymous_id="anon"),
        event(1, api_key=None, api_key_hash="AB" * 32),
        event(1, api_key="k-beta"),  # another tenant's key
        event(1, client_id="idle", api_key="k-idle"),  # not active
        event(1, properties=[]),
        event(1, extra={"deep": [[[[1]]]]}),
        [event(1), event(2, client_id="ghost")],
        [event(i) for i in range(500)],
        [event(i) for i in range(501)],
    ],
)
def test_the_hot_path_agrees_with_the_reference_path(value: object) -> None:
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if v is not None}
    elif isinstance(value, list):
        value = [{k: v for k, v in e.items() if v is not None} for e in value]
    assert_paths_agree(orjson.dumps(value), None)
    assert_paths_agree(orjson.dumps(value), [("traceparent", b"00-1")])


def test_a_poll_of_unknown_clients_looks_them_up_together() -> None:
    """The first client of a poll that is not fresh in process has every client id of the
    poll looked up in one call (one Redis read and one PostgreSQL query, see
    ClientDirectory.lookup_many), not one lookup per message."""
    from router.buffers import ClientBuffers
    from router.offsets import OffsetTracker
    from router.poll import PollRouter
    from tests.unit.router_messages import KEYS, NOW_ISO, RECEIVED_MS

    single: list[str] = []
    together: list[list[str]] = []

    def one(client_id: str) -> LookupResult:
        single.append(client_id)
        return lookup(client_id)

    def many(client_ids: Any) -> dict[str, LookupResult]:
        together.append(list(client_ids))
        return {c: lookup(c) for c in client_ids}

    fresh_in_process = {"acme"}

    def fresh(client_id: str) -> LookupResult | None:
        return lookup(client_id) if client_id in fresh_in_process else None

    ghosts = [f"ghost-{i}" for i in range(40)]
    msgs = [msg(event(1), offset=0)]
    msgs += [msg(event(i + 2, client_id=g), offset=i + 1) for i, g in enumerate(ghosts)]
    msgs.append(msg([event(50, client_id="beta", api_key="k-beta"), event(51)], offset=41))
    router_ = PollRouter(
        TOPIC, ClientBuffers(), OffsetTracker(), one, KEYS, "t", fresh=fresh, lookup_many=many
    )
    result = router_.route(msgs, RECEIVED_MS, NOW_ISO, 1.0)
    assert together == [["acme", *ghosts, "beta"]] and single == []
    assert [letter.letter.reason for letter in result.letters] == [Reason.UNKNOWN_CLIENT] * 40
    assert (result.messages, result.events) == (42, 43)
    assert router_.buffers.open_rows == 3

    # Every client fresh in process: nothing is scanned or looked up together.
    together.clear()
    fresh_in_process.update(["beta", *ghosts])
    router_.route(msgs, RECEIVED_MS, NOW_ISO, 1.0)
    assert together == [] and single == []


def test_client_ids_named_finds_each_id_once_in_order() -> None:
    from router.poll import client_ids_named

    values = [
        orjson.dumps(event(1)),
        orjson.dumps([event(2, client_id="beta"), event(3)]),
        b'{ "client_id" : "gamma-1_x", "x": 1}',
        b'{"client_id":"Bad Id"}',
        b'{"client_id": 5}',
        None,
        b"not json",
    ]
    assert client_ids_named(values) == ["acme", "beta", "gamma-1_x"]
    assert client_ids_named(values, limit=2) == ["acme", "beta"]
