"""The router's small policies: rejected batches, back-pressure, backoff, consumer config."""

from __future__ import annotations

import orjson

from analytics_core.event_contract import Origin, ValidEvent
from analytics_core.reasons import Reason
from router.backoff import Backoff, PartitionBackoffs, delay_for_attempt
from router.backpressure import Budget, Change, Held, pause_change
from router.buffers import Batch
from router.config import RouterSettings
from router.decision import Routed
from router.kafka_consumer import consumer_config
from router.rejection_policy import GiveUp, RetryBatch, after_rejection, rejected_letters
from router.rows import pending_row, read_row

T = "shared_raw_events"


def test_a_rejected_batch_backs_off_then_becomes_dead_letters() -> None:
    assert after_rejection(1, 3, 0.5, 10.0) == RetryBatch(0.5)
    assert after_rejection(2, 3, 0.5, 10.0) == RetryBatch(1.0)
    assert after_rejection(3, 3, 0.5, 10.0) == GiveUp()
    assert delay_for_attempt(10, 0.5, 10.0) == 10.0


def test_rejected_rows_carry_their_original_bytes_or_say_they_could_not() -> None:
    def row(offset: int):
        ev = ValidEvent(
            1, "c", "h", f"00000000-0000-4000-8000-{offset:012d}", False, "pv", 1, None, "u",
            b"{}",
        )  # fmt: skip
        return pending_row(Routed("c", "db", ev, Origin(T, 0, offset), 3), T, 0, offset, 0, 1)

    rows = [row(4), row(5)]
    batch = Batch.from_rows("db", "c", rows)
    letters = rejected_letters(
        batch, {(0, 4): b"orig"}, topic=T, detail="d", now_iso="now", router_version="v"
    )
    kept, gone = letters
    assert kept.value == b"orig" and kept.letter.detail == "d" and kept.offset == 4
    assert gone.value == read_row(rows[1].line).as_json()  # the routed row, as JSON
    assert orjson.loads(gone.value or b"")["kafka_offset"] == 5
    assert "no longer in Kafka" in gone.letter.detail
    for item in letters:
        assert item.letter.reason is Reason.DESTINATION_ERROR and item.letter.attempt == 3
        assert item.letter.batch_index == 1 and item.letter.client_id == "c"


def test_rejected_letters_name_no_other_client_database() -> None:
    """ClickHouse suggests a similar table when one is missing, possibly another client's;
    a client's dead letters must not carry that name."""
    ev = ValidEvent(1, "c", "h", "00000000-0000-4000-8000-000000000004", False, "pv", 1, None,
                    "u", b"{}")  # fmt: skip
    row = pending_row(Routed("c", "db", ev, Origin(T, 0, 4), 1), T, 0, 4, 0, 1)
    batch = Batch.from_rows("db", "c", [row])
    clickhouse = (
        "Code: 60. DB::Exception: Table client_c.events_base does not exist. Maybe you meant "
        "client_other.events_base?. (UNKNOWN_TABLE) (version 26.1.1)"
    )
    [letter] = rejected_letters(
        batch, {(0, 4): b"orig"}, topic=T, detail=clickhouse, now_iso="now", router_version="v"
    )
    assert "client_other" not in letter.letter.detail
    assert letter.letter.detail == (
        "Code: 60. DB::Exception: Table client_c.events_base does not exist. (UNKNOWN_TABLE) "
        "(version 26.1.1)"
    )


def test_consumption_pauses_at_the_budget_and_resumes_under_half() -> None:
    budget = Budget(max_rows=100, max_bytes=1000)
    assert pause_change(False, Held(99, 999), budget) is Change.NONE
    assert pause_change(False, Held(100, 0), budget) is Change.PAUSE
    assert pause_change(False, Held(0, 1000), budget) is Change.PAUSE
    assert pause_change(True, Held(50, 0), budget) is Change.NONE  # not under half yet
    assert pause_change(True, Held(49, 499), budget) is Change.RESUME


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(0.5, 2.0)
    assert [b.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    b.reset()
    assert b.next_delay() == 0.5


def test_consumer_config_takes_partitions_over_fast() -> None:
    env = {"ROUTER_GROUP_ID": "g", "ROUTER_INSTANCE_ID": "i"}
    dynamic = consumer_config(RouterSettings.from_env(env))
    assert dynamic["partition.assignment.strategy"] == "cooperative-sticky"
    assert dynamic["session.timeout.ms"] == 6000 and "group.instance.id" not in dynamic
    assert dynamic["enable.auto.commit"] is False
    static = consumer_config(
        RouterSettings.from_env({**env, "ROUTER_GROUP_INSTANCE_ID": "router-0"})
    )
    assert static["group.instance.id"] == "router-0"
    # librdkafka's own lines go through logging (JSON lines), not raw to stderr.
    assert dynamic["logger"].name == "router.kafka"


def test_a_dead_letter_too_large_to_forward_is_cut_once_and_says_so() -> None:
    from analytics_core.dead_letter import DeadLetter
    from analytics_core.event_contract import MAX_MESSAGE_BYTES
    from analytics_core.settings import KafkaSettings
    from router.dead_letter_producer import PendingLetter, _cut, producer_config

    letter = DeadLetter(
        Reason.PAYLOAD_TOO_LARGE, "d" * 1000, Origin(T, 0, 1), Origin(T, 0, 1), None, None,
        None, "now", 1, "v",
    )  # fmt: skip
    cut = _cut(PendingLetter(b"x" * 999_000, letter, 0, 1))
    assert cut.truncated and cut.value == b"x" * MAX_MESSAGE_BYTES
    assert len(cut.letter.detail) <= 1000 and cut.letter.detail.endswith("(too large to forward)")
    assert (cut.partition, cut.offset) == (0, 1) and cut.letter.reason is letter.reason
    config = producer_config(KafkaSettings(), "r-dl")
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    assert config["logger"].name == "router.kafka"


def test_a_partition_stuck_on_the_registry_backs_off_alone() -> None:
    backoffs = PartitionBackoffs(0.5, 10.0)
    waits = []
    for _ in range(6):
        waits.append(backoffs.next_delay(3))
        # Partitions 0-2 flow in every poll; 3 is rewound again (its client is uncached and
        # PostgreSQL is away): their progress must not reset its wait.
        backoffs.progressed([0, 1, 2, 3], rewound=[3])
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert backoffs.next_delay(1) == 0.5  # another partition starts from the base
    backoffs.progressed([3], rewound=[])  # 3 got past it: the outage is over for it
    assert backoffs.next_delay(3) == 0.5
    backoffs.next_delay(4)
    backoffs.forget(4)  # revoked
    assert backoffs.next_delay(4) == 0.5
