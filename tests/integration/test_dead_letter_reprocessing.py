"""Dead-letter reprocessing on the real stack: the real router dead-letters, the Dagster asset
replays, parks or defers. Each test has private raw and dead-letter topics (the router and
the reprocessing both use them), so no other test's traffic is ever replayed or parked."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer, TopicPartition
from dagster import DagsterInstance, materialize

from analytics_core import kafka_clients, lifecycle, pg
from analytics_core.clickhouse import http_client
from analytics_core.connections import open_connections
from analytics_core.dead_letter import DeadLetter, read_dead_letter
from analytics_core.dlq.kafka_io import DeadLetterReader
from analytics_core.dlq.reprocess import LOCK_CLASS, ReprocessOptions, reprocess
from analytics_core.event_contract import Origin
from analytics_core.reasons import Reason
from analytics_core.settings import Settings
from analytics_pipeline.defs.dead_letters.assets import DEAD_LETTER_ASSETS
from analytics_pipeline.resources import KafkaResource, default_resources
from tests.conftest import event, wait_for
from tests.integration.router_support import private_topics

pytestmark = pytest.mark.integration
OP = "dead_letters__reprocessing"


@dataclass
class Topics:
    settings: Settings  # the stack with this test's private topics
    group: str
    producer: Producer

    @property
    def raw(self) -> str:
        return self.settings.kafka.raw_topic

    @property
    def dead(self) -> str:
        return self.settings.kafka.dead_letter_topic

    def send(self, values: list[bytes], topic: str | None = None, **kw: Any) -> None:
        for v in values:
            self.producer.produce(topic or self.raw, value=v, **kw)
        assert self.producer.flush(30) == 0

    def end(self, topic: str) -> int:
        c = kafka_clients.consumer(self.settings.kafka, "x")
        try:
            parts = c.list_topics(topic, timeout=10).topics[topic].partitions
            return sum(
                c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
            )
        finally:
            c.close()

    def letters(self) -> list[tuple[DeadLetter, bytes | None]]:
        c = kafka_clients.consumer(self.settings.kafka, f"t4-read-{uuid.uuid4().hex[:8]}")
        want = self.end(self.dead)
        out: list[tuple[DeadLetter, bytes | None]] = []
        try:
            c.subscribe([self.dead])
            deadline = time.monotonic() + 30
            while len(out) < want and time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is not None and not m.error():
                    out.append((read_dead_letter(m.headers()), m.value()))  # type: ignore[arg-type]
        finally:
            c.close()
        return out


@pytest.fixture
def topics(stack: Settings) -> Iterator[Topics]:
    with private_topics(stack, "t4") as settings:
        producer = kafka_clients.producer(stack.kafka)
        yield Topics(settings, f"t4-dlq-{uuid.uuid4().hex[:8]}", producer)


@pytest.fixture
def router(topics: Topics, start_router: Callable[..., Any]) -> Any:
    return start_router(KAFKA_RAW_TOPIC=topics.raw, KAFKA_DEAD_LETTER_TOPIC=topics.dead)


@pytest.fixture(scope="module")
def instance() -> DagsterInstance:
    return DagsterInstance.ephemeral()


def run_asset(instance: DagsterInstance, topics: Topics, **config: Any) -> dict[str, Any]:
    """Materialize the reprocessing asset (as the job/schedule does); returns its metadata."""
    kafka = KafkaResource(raw_topic=topics.raw, dead_letter_topic=topics.dead)
    result = materialize(
        DEAD_LETTER_ASSETS,
        instance=instance,
        resources={**default_resources(), "kafka": kafka},
        run_config={"ops": {OP: {"config": {"consumer_group": topics.group, **config}}}},
    )
    [m] = result.asset_materializations_for_node(OP)
    return {k: v.value for k, v in m.metadata.items()}


def rows(settings: Settings, database: str) -> list[tuple[Any, ...]]:
    ch = http_client(settings.clickhouse)
    try:
        q = f"SELECT event_id, attempt, origin_offset FROM `{database}`.events_base ORDER BY 1"
        return [tuple(r) for r in ch.query(q).result_rows]
    finally:
        ch.close()


def pg_rows(settings: Settings, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = pg.connect(settings.postgres)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def test_pending_client_event_is_replayed_exactly_once_after_provisioning(
    stack: Settings, topics: Topics, router: Any, make_client: Any, instance: DagsterInstance
) -> None:
    client = make_client("t4", active=False)
    first = event(client)
    topics.send([orjson.dumps(first)])
    wait_for(lambda: topics.end(topics.dead) == 1, what="the dead letter of the pending client")
    [(letter, value)] = topics.letters()
    assert letter.reason is Reason.CLIENT_INACTIVE and value == orjson.dumps(first)

    waiting = run_asset(instance, topics)  # the client is still pending: deferred
    assert waiting["deferred"] == 1 and waiting["replayed"] == 0
    [(payload, reason)] = pg_rows(
        stack,
        "SELECT payload, reason FROM deferred_dead_letters WHERE dl_topic = %s",
        topics.dead,
    )
    assert bytes(payload) == value and reason == "client_inactive"

    second = event(client)  # dead-lettered after the first run: read from the topic next time
    topics.send([orjson.dumps(second)])
    wait_for(lambda: topics.end(topics.dead) == 2, what="the second dead letter")
    with open_connections(stack) as connections:
        provisioned = lifecycle.provision(connections, client.client_id)
    assert isinstance(provisioned, lifecycle.Provisioned)

    replayed = run_asset(instance, topics)
    assert replayed["replayed"] == 2 and replayed["replays_sent"] == 2
    assert replayed["by_origin"] == {
        "deferred_table": {"replayed": 1},
        "topic": {"replayed": 1},
    }
    wait_for(lambda: len(rows(stack, client.database)) == 2, what="both replayed events routed")
    got = rows(stack, client.database)
    assert sorted(r[0] for r in got) == sorted(
        uuid.UUID(str(e["event_id"])) for e in (first, second)
    )
    assert all(r[1] == 2 for r in got)  # attempt counted: first delivery + one replay
    assert {r[2] for r in got} == {letter.origin.offset for letter, _ in topics.letters()}

    raw_end = topics.end(topics.raw)
    again = run_asset(instance, topics)  # changes nothing
    assert again["records_read"] == 0 and again["replays_sent"] == 0
    time.sleep(1.5)
    assert topics.end(topics.raw) == raw_end and topics.end(topics.dead) == 2
    assert len(rows(stack, client.database)) == 2
    assert pg_rows(
        stack,
        "SELECT resolution FROM deferred_dead_letters WHERE dl_topic = %s",
        topics.dead,
    ) == [("replayed",)]


def test_permanent_failures_are_parked_with_reason_and_original_bytes(
    stack: Settings, topics: Topics, router: Any, make_client: Any, instance: DagsterInstance
) -> None:
    client = make_client("t4")
    bad = {
        "invalid_json": b'{"client_id": "' + client.client_id.encode() + b'", "trunc',
        "schema_violation": orjson.dumps(event(client, timestamp="yesterday")),
        "invalid_api_key": orjson.dumps(event(client, api_key="wrong")),
    }
    topics.send(list(bad.values()))
    wait_for(lambda: topics.end(topics.dead) == 3, what="three dead letters")
    meta = run_asset(instance, topics)
    assert meta["parked"] == 3 and meta["replayed"] == 0
    assert meta["by_reason_and_outcome"] == {reason: {"parked": 1} for reason in sorted(bad)}
    parked = pg_rows(
        stack,
        "SELECT reason, parked_because, payload, origin_topic, source_topic, attempts, detail"
        " FROM parked_dead_letters WHERE dl_topic = %s ORDER BY reason",
        topics.dead,
    )
    assert [p[0] for p in parked] == sorted(bad)
    for reason, because, payload, origin_topic, source_topic, attempts, detail in parked:
        assert bytes(payload) == bad[reason]
        assert because == "permanent_reason" and attempts == 1
        assert origin_topic == source_topic == topics.raw and "router said" in detail

    again = run_asset(instance, topics)  # twice: nothing changes
    assert again["records_read"] == 0 and again["parked"] == 0
    [(n,)] = pg_rows(
        stack, "SELECT count(*) FROM parked_dead_letters WHERE dl_topic = %s", topics.dead
    )
    assert n == 3


def _letter(client_id: str, attempt: int, reason: Reason = Reason.CLIENT_INACTIVE) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail="client status is pending",
        origin=Origin("shared_raw_events", 0, 12345),
        source=Origin("shared_raw_events", 1, 999),
        batch_index=0,
        client_id=client_id,
        event_id=str(uuid.uuid4()),
        first_failed_at="2026-01-01T00:00:00.000Z",
        attempt=attempt,
        router_version="test",
    )


def test_record_over_the_attempt_limit_is_parked_not_looped(
    stack: Settings, topics: Topics, make_client: Any, instance: DagsterInstance
) -> None:
    client = make_client("t4")  # active: without the limit this would be replayed
    payload = orjson.dumps(event(client))
    topics.send([payload], topic=topics.dead, headers=_letter(client.client_id, 5).headers())
    topics.send([payload], topic=topics.dead, headers=_letter(client.client_id, 2).headers())
    meta = run_asset(instance, topics, max_attempts=2)
    assert meta["parked"] == 2 and meta["replayed"] == 0
    assert topics.end(topics.raw) == 0  # nothing went back to the raw topic
    because = pg_rows(
        stack,
        "SELECT attempts, parked_because, detail FROM parked_dead_letters"
        " WHERE dl_topic = %s ORDER BY attempts",
        topics.dead,
    )
    assert [(a, b) for a, b, _d in because] == [(2, "max_attempts"), (5, "max_attempts")]
    assert because[0][2].startswith("failed 2 times; the limit is 2")
    # With the default limit (5) an attempt-2 letter would have been replayed.
    topics.send([payload], topic=topics.dead, headers=_letter(client.client_id, 2).headers())
    assert run_asset(instance, topics)["replayed"] == 1 and topics.end(topics.raw) == 1


def test_filtered_run_leaves_other_records_for_a_later_run(
    stack: Settings, topics: Topics, make_client: Any, instance: DagsterInstance
) -> None:
    a, b = make_client("t4"), make_client("t4")
    for c in (a, b):
        topics.send(
            [orjson.dumps(event(c))], topic=topics.dead, headers=_letter(c.client_id, 1).headers()
        )
    topics.send([b"not even an envelope"], topic=topics.dead)  # no headers at all
    only_a = run_asset(instance, topics, client_id=a.client_id)
    assert only_a["replayed"] == 1 and only_a["not_selected"] == 2
    assert only_a["committed_offsets"] == {}  # a filtered run never moves the group
    assert topics.end(topics.raw) == 1
    again_a = run_asset(instance, topics, client_id=a.client_id)
    assert again_a["already_handled"] == 1 and again_a["replays_sent"] == 0

    everything = run_asset(instance, topics)
    assert everything["already_handled"] == 1  # a's record, handled by the filtered run
    assert everything["replayed"] == 1 and everything["parked"] == 1  # b's, and the bad one
    assert topics.end(topics.raw) == 2
    assert sum(everything["committed_offsets"].values()) == 3
    [(reason, because)] = pg_rows(
        stack,
        "SELECT reason, parked_because FROM parked_dead_letters WHERE dl_topic = %s",
        topics.dead,
    )
    assert (reason, because) == ("unreadable_envelope", "unreadable_envelope")
    assert run_asset(instance, topics)["records_read"] == 0


def test_one_run_per_consumer_group_at_a_time(stack: Settings, topics: Topics) -> None:
    conn = pg.connect(stack.postgres)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, topics.group))
        conn.commit()
        report = reprocess(topics.settings, ReprocessOptions(group_id=topics.group))
        assert report.busy and report.read == 0
        # Released here, not by the close: the server ends a closed session's locks a moment
        # later, and the next call must not race it.
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (LOCK_CLASS, topics.group))
            assert cur.fetchone() == (True,)
        conn.commit()
    finally:
        conn.close()
    assert not reprocess(topics.settings, ReprocessOptions(group_id=topics.group)).busy


def test_reader_stops_at_the_end_offsets_seen_at_the_start(topics: Topics) -> None:
    topics.send([b"a", b"b"], topic=topics.dead, key=b"k")
    reader = DeadLetterReader(topics.settings.kafka, topics.group)
    try:
        ranges = reader.open()
        assert sum(r.backlog for r in ranges) == 2
        topics.send([b"c"], topic=topics.dead, key=b"k")  # written during the run: next run's
        got = [r.value for chunk in reader.chunks(10, 100) for r in chunk]
    finally:
        reader.close()
    assert sorted(got) == [b"a", b"b"]  # type: ignore[type-var]


def test_replay_of_one_event_of_a_batch_never_duplicates_its_neighbours(
    stack: Settings, topics: Topics, router: Any, make_client: Any, instance: DagsterInstance
) -> None:
    active, pending = make_client("t4"), make_client("t4", active=False)
    batch = [event(active), event(pending), event(active)]
    topics.send([orjson.dumps(batch)])
    wait_for(lambda: len(rows(stack, active.database)) == 2, what="the active client's events")
    wait_for(lambda: topics.end(topics.dead) == 1, what="the pending client's dead letter")
    [(letter, _value)] = topics.letters()
    assert letter.batch_index == 1
    with open_connections(stack) as connections:
        provisioned = lifecycle.provision(connections, pending.client_id)
    assert isinstance(provisioned, lifecycle.Provisioned)
    assert run_asset(instance, topics)["replayed"] == 1
    wait_for(lambda: len(rows(stack, pending.database)) == 1, what="the replayed event")
    time.sleep(1.5)
    assert len(rows(stack, active.database)) == 2  # the replay carried only batch index 1
    [(event_id, attempt, origin_offset)] = rows(stack, pending.database)
    assert str(event_id) == batch[1]["event_id"] and attempt == 2
    assert origin_offset == letter.origin.offset


KILLED_AFTER_REPLAYS = """
import os, signal, sys
from analytics_core.dlq import reprocess, store

def killed(*_args, **_kwargs):  # the replays are acknowledged; PostgreSQL never hears of them
    os.kill(os.getpid(), signal.SIGKILL)

store.record_fates = killed
sys.exit(reprocess.main(["--group-id", sys.argv[1]]))
"""


def test_case10_a_run_killed_after_its_replays_reached_kafka_duplicates_no_row(
    stack: Settings, topics: Topics, router: Any, make_client: Any, instance: DagsterInstance
) -> None:
    """The reprocessing job is SIGKILLed between its replays' acks and its PostgreSQL
    commit; the re-run replays everything again. The router stores each event once:
    count() == uniqExact(event_id) in events_base itself, not only in the FINAL view."""
    import os
    import subprocess
    import sys

    client = make_client("t4", active=False)
    n = 300
    docs = [event(client, n=i) for i in range(n)]
    for d in docs[::3]:
        del d["event_id"]  # a third with ids derived from their origin coordinates
    topics.send([orjson.dumps(d) for d in docs])
    wait_for(lambda: topics.end(topics.dead) == n, what="the pending client's dead letters")
    with open_connections(stack) as connections:
        assert isinstance(lifecycle.provision(connections, client.client_id), lifecycle.Provisioned)
    env = dict(os.environ, KAFKA_RAW_TOPIC=topics.raw, KAFKA_DEAD_LETTER_TOPIC=topics.dead)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_REPLAYS, topics.group],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert topics.end(topics.raw) == 2 * n  # the originals and one copy of each replay
    meta = run_asset(instance, topics)  # nothing was recorded: everything is replayed again
    assert meta["replayed"] == n and topics.end(topics.raw) == 3 * n
    wait_for(lambda: len(rows(stack, client.database)) >= n, 60, what="the replayed events")
    time.sleep(3)  # long enough for any second copy to land (flush interval 200 ms)
    got = rows(stack, client.database)
    assert len(got) == len({r[0] for r in got}) == n  # plain count(): no duplicate stored
    assert {r[1] for r in got} == {2}  # first delivery + one replay, whichever copy won
    assert run_asset(instance, topics)["records_read"] == 0
