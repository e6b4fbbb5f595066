"""Clients on several ClickHouse targets, the pure side (issue 15): the target travels from
the registry record through the cache to every buffered row, a client's move starts a new
block, and a busy or down target's buffers wait while the others are sealed."""

from __future__ import annotations

import orjson

from analytics_core.client_cache import decode, encode
from analytics_core.clients import ClientFound, ClientMissing, ClientRecord, ClientStatus
from analytics_core.event_contract import hash_api_key
from router.buffers import ClientBuffers
from router.flush_policy import FlushLimits, seal_due
from router.rows import PendingRow
from tests.unit.router_messages import (
    RECORDS,
    FakeMessage,
    assert_paths_agree,
    poll_once,
)

KEY_HASH = hash_api_key("k")


def _event(client: str, n: int) -> bytes:
    return orjson.dumps(
        {
            "client_id": client,
            "api_key": f"k-{client}",
            "event_id": f"00000000-0000-4000-8000-{n:012d}",
            "event_name": "page_view",
            "timestamp": 1795771200123,
            "user_id": f"u-{n}",
            "properties": {"n": n},
        }
    )


def _row(offset: int) -> PendingRow:
    return PendingRow(0, offset, 0, 0, b"row%d" % offset, None)


def test_the_cache_entry_carries_the_target_and_an_entry_without_one_is_a_miss() -> None:
    record = ClientRecord("acme", ClientStatus.ACTIVE, KEY_HASH, "client_acme", "ch2")
    assert decode("acme", encode(ClientFound(record))) == ClientFound(record)
    assert decode("acme", encode(ClientMissing("acme"))) == ClientMissing("acme")
    # Written before clients had targets: read again from PostgreSQL (the client may have
    # moved), never taken for `default`.
    legacy = orjson.dumps({"status": "active", "api_key_hash": KEY_HASH, "db": "client_acme"})
    assert decode("acme", legacy) is None
    for forged in ({"target": 7}, {"target": None}, {"db": ["x"], "target": "ch2"}):
        doc = {"status": "active", "api_key_hash": KEY_HASH, "db": "client_acme", **forged}
        assert decode("acme", orjson.dumps(doc)) is None


def test_rows_are_buffered_for_their_clients_target_on_both_paths() -> None:
    assert RECORDS["gamma"].ch_target == "ch2" and RECORDS["acme"].ch_target == "default"
    msgs = [FakeMessage(_event("gamma", 1), 0, 1), FakeMessage(_event("acme", 2), 0, 2)]
    _result, buffers, _tracker = poll_once(msgs)
    assert {db: b.target for db, b in buffers.open.items()} == {
        "client_gamma": "ch2",
        "client_acme": "default",
    }
    # The reference path (router.processing) gives the same rows the same targets.
    batch = b"[" + _event("gamma", 3) + b"," + _event("acme", 4) + b"]"
    ref = assert_paths_agree(batch, None)
    assert [r.target for r in ref.rows] == ["ch2", "default"]  # type: ignore[union-attr]


def test_a_client_that_moved_starts_a_new_block_and_the_old_one_is_due_at_once() -> None:
    b = ClientBuffers()
    b.add("client_acme", "acme", _row(1), now=1.0)
    b.add("client_acme", "acme", _row(2), now=1.0)
    b.add("client_acme", "acme", _row(3), now=2.0, target="ch2")
    [old] = b.due_retries(now=2.0)
    assert (old.target, list(old.rows.offsets), old.attempts) == ("default", [1, 2], 0)
    new = b.open["client_acme"]
    assert (new.target, list(new.offsets), new.opened_at) == ("ch2", [3], 2.0)
    assert (b.open_rows, b.total_rows()) == (1, 1)
    [sealed] = b.seal()
    assert sealed.target == "ch2" and sealed.token != old.token


def test_a_blocked_targets_buffers_stay_open_and_its_retries_parked() -> None:
    b = ClientBuffers()
    b.add("client_a", "a", _row(1), now=0.0)
    b.add("client_b", "b", _row(2), now=0.0, target="ch2")
    limits = FlushLimits(
        min_rows=1, max_wait_s=1.0, catchup_max_wait_s=1.0, flush_rows=10, flush_bytes=10**6
    )
    [sealed] = seal_due(b, limits, 5.0, catching_up=False, blocked=frozenset({"ch2"}))
    assert sealed.target == "default" and list(b.open) == ["client_b"]
    # Under memory pressure too, only the writable targets' buffers are sealed.
    b.add("client_a", "a", _row(3), now=5.0)
    assert b.seal_largest(0, 0, frozenset({"ch2"}))[0].database == "client_a"
    assert list(b.open) == ["client_b"]
    assert b.seal(frozenset({"ch2"})) == []
    sealed.next_attempt_at = 1.0
    b.park_for_retry(sealed)
    assert b.due_retries(9.0, frozenset({"default"})) == []
    assert b.due_retries(9.0) == [sealed] and b.retrying == []
    [late] = b.seal()
    assert late.target == "ch2"


def test_a_batch_keeps_its_target_through_a_partial_drop() -> None:
    b = ClientBuffers()
    for offset in (1, 2, 3):
        b.add("client_acme", "acme", _row(offset), target="ch2")
    [batch] = b.seal()
    batch.replace_rows(batch.rows.keeping([0, 2]))
    assert batch.target == "ch2" and batch.rows.target == "ch2"
    b.park_for_retry(batch)
    assert b.drop_partitions({1}) == 0 and b.retrying[0].rows.target == "ch2"


def test_records_default_to_the_default_target() -> None:
    assert ClientRecord("x", ClientStatus.ACTIVE, KEY_HASH, "db").ch_target == "default"
