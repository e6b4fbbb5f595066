"""A three-broker Kafka (DEVSTACK_KAFKA_BROKERS=3) and the router surviving a broker's death.

The module starts its own cluster (three KRaft nodes on free ports, private state dir); the
router's other services (PostgreSQL, Redis, ClickHouse) are the shared stack. The fault test
SIGKILLs one broker while a producer sends at a steady rate and the real router process
consumes, brings the broker back, and then checks every client table: nothing lost, nothing
duplicated, no dead letter. Background merges are stopped on the clients' tables, so a
duplicate row cannot be merged away before it is counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from analytics_core import kafka_clients
from analytics_core.clickhouse import http_client
from analytics_core.dead_letter import read_dead_letter
from analytics_core.settings import REPO_ROOT, KafkaSettings, Settings
from devstack import api
from tests.conftest import ClientFixture, event, router_env, unique_id, wait_for
from tests.integration.local_topology import Scratch, scratch_env, scratch_topology

pytestmark = pytest.mark.integration

BROKERS = 3


@dataclass
class Cluster:
    scratch: Scratch
    cold_up_s: float

    @property
    def settings(self) -> Settings:
        return self.scratch.settings

    @property
    def bootstrap(self) -> str:
        return api.topology(self.settings, options=self.scratch.options).kafka.bootstrap_servers

    def nodes(self) -> dict[str, api.ServiceStatus]:
        rows = api.status(self.settings, options=self.scratch.options)
        return {r.name: r for r in rows if r.name.startswith("kafka")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("kafka-cluster") / "state"
    overrides = scratch_env(state, kafka_brokers=BROKERS)
    t0 = time.monotonic()
    with scratch_topology(state, ["kafka"], overrides) as scratch:
        yield Cluster(scratch, time.monotonic() - t0)


def _kafka(bootstrap: str) -> KafkaSettings:
    """The scratch cluster's brokers (a local, plaintext cluster)."""
    return KafkaSettings(bootstrap_servers=bootstrap)


def _admin(bootstrap: str) -> AdminClient:
    return kafka_clients.admin(_kafka(bootstrap))


@pytest.mark.timeout(240)
def test_three_nodes_replicate_every_topic_and_show_in_status(cluster: Cluster) -> None:
    nodes = cluster.nodes()
    assert sorted(nodes) == ["kafka-1", "kafka-2", "kafka-3"]
    assert all(n.healthy and n.pid for n in nodes.values()), nodes
    assert len({n.pid for n in nodes.values()}) == BROKERS
    # Idempotent: a second up adopts the running nodes.
    t0 = time.monotonic()
    api.ensure_up(cluster.settings, ["kafka"], options=cluster.scratch.options)
    assert time.monotonic() - t0 < 15
    assert {k: n.pid for k, n in cluster.nodes().items()} == {k: n.pid for k, n in nodes.items()}

    # The shared topics: three replicas, all in sync, min.insync.replicas 2.
    bootstrap = cluster.bootstrap
    assert bootstrap.count(",") == BROKERS - 1
    admin = _admin(bootstrap)
    meta = admin.list_topics(timeout=10)
    assert set(meta.brokers) == {1, 2, 3}
    k = cluster.settings.kafka
    for topic in (k.raw_topic, k.dead_letter_topic):
        parts = meta.topics[topic].partitions
        assert len(parts) == k.topic_partitions
        assert all(sorted(p.replicas) == [1, 2, 3] and len(p.isrs) == 3 for p in parts.values())
        res = ConfigResource("topic", topic)
        assert admin.describe_configs([res])[res].result(10)["min.insync.replicas"].value == "2"
    # The internal offsets topic (created by the first group) is replicated three times too.
    group = unique_id("cluster-offsets")
    c = kafka_clients.consumer(_kafka(bootstrap), group)
    wait_for(
        lambda: _retriable(
            lambda: c.commit(offsets=[TopicPartition(k.raw_topic, 0, 0)], asynchronous=False)
        ),
        60,
        what="a first offset commit (creates __consumer_offsets)",
    )
    c.close()
    offsets = admin.list_topics(timeout=10).topics["__consumer_offsets"].partitions
    assert all(len(p.replicas) == 3 for p in offsets.values())

    # The CLI shows each node, and `env` points a process at all three brokers.
    cli = [sys.executable, "-m", "devstack"]
    run = dict(cwd=REPO_ROOT, env=cluster.scratch.env, capture_output=True, text=True, timeout=60)
    st = subprocess.run([*cli, "status", "--json"], **run)  # type: ignore[call-overload]
    rows = {r["name"]: r for r in json.loads(st.stdout)}
    for name, node in nodes.items():
        assert rows[name]["healthy"] is True and rows[name]["pid"] == node.pid
    env = subprocess.run([*cli, "env"], **run)  # type: ignore[call-overload]
    assert env.returncode == 0, env.stderr
    assert f"export KAFKA_BOOTSTRAP_SERVERS={bootstrap}\n" in env.stdout
    lg = subprocess.run([*cli, "logs", "kafka-2", "-n", "5"], **run)  # type: ignore[call-overload]
    assert lg.returncode == 0 and lg.stdout.strip(), lg.stderr


@dataclass
class SteadyProducer:
    """Sends events round-robin over `clients` at `rate`/s with acks=all and idempotence."""

    bootstrap: str
    topic: str
    clients: list[ClientFixture]
    rate: float
    delivered: dict[str, list[str]] = field(default_factory=dict)  # client -> event ids
    acked: list[tuple[float, int, int]] = field(default_factory=list)  # (time, partition, off)
    failures: list[str] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> SteadyProducer:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        producer = kafka_clients.producer(_kafka(self.bootstrap), **{"linger.ms": 5})
        lock = threading.Lock()

        def on_delivery(err: KafkaError | None, msg: object, client_id: str, eid: str) -> None:
            with lock:
                if err is not None:
                    self.failures.append(f"{eid}: {err}")
                    return
                self.delivered.setdefault(client_id, []).append(eid)
                self.acked.append((time.monotonic(), msg.partition(), msg.offset()))  # type: ignore[attr-defined]

        n = 0
        started = time.monotonic()
        while not self.stop_event.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while n < due:
                c = self.clients[n % len(self.clients)]
                eid = str(uuid.uuid4())
                doc = event(c, event_id=eid, n=n)

                def cb(err: KafkaError | None, msg: object, c: str = c.client_id, e: str = eid):
                    on_delivery(err, msg, c, e)

                producer.produce(self.topic, value=orjson.dumps(doc), on_delivery=cb)
                n += 1
            producer.poll(0.01)
        remaining = producer.flush(120)
        if remaining:
            self.failures.append(f"{remaining} messages still unacknowledged after 120 s")

    def finish(self) -> None:
        self.stop_event.set()
        assert self.thread is not None
        self.thread.join(180)
        assert not self.thread.is_alive(), "producer did not finish flushing"

    def total(self) -> int:
        return sum(len(v) for v in self.delivered.values())


def _ch_rows(settings: Settings, sql: str) -> list[tuple[object, ...]]:
    ch = http_client(settings.clickhouse)
    try:
        return [tuple(r) for r in ch.query(sql).result_rows]
    finally:
        ch.close()


def _landed(settings: Settings, clients: list[ClientFixture]) -> dict[int, int]:
    """Highest routed Kafka offset per raw-topic partition, over the clients' tables."""
    union = " UNION ALL ".join(
        f"SELECT kafka_partition, kafka_offset FROM `{c.database}`.events_base" for c in clients
    )
    rows = _ch_rows(
        settings, f"SELECT kafka_partition, max(kafka_offset) FROM ({union}) GROUP BY 1"
    )
    return {int(p): int(o) for p, o in rows}  # type: ignore[call-overload]


def _dead_letters(bootstrap: str, topic: str) -> list[tuple[str, str]]:
    """Every message on the (private) dead-letter topic: (reason, detail)."""
    c = kafka_clients.consumer(_kafka(bootstrap), unique_id("dl-audit"))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        want = 0
        tps = []
        for p in parts:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            want += hi - lo
            tps.append(TopicPartition(topic, p, lo))
        c.assign(tps)
        out: list[tuple[str, str]] = []
        deadline = time.monotonic() + 30
        while len(out) < want and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                letter = read_dead_letter(msg.headers())  # type: ignore[arg-type]
                out.append((letter.reason.value, letter.detail))
        assert len(out) == want, f"read {len(out)} of {want} dead letters"
        return out
    finally:
        c.close()


def _retriable(call: Callable[[], object]) -> bool:
    """True when `call` succeeded, False on a retriable Kafka error (e.g. a coordinator that
    is still loading); anything else is raised."""
    try:
        call()
    except KafkaException as exc:
        if exc.args[0].retriable() or exc.args[0].code() in _LOADING:
            return False
        raise
    return True


_LOADING = {
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
}


def _group_coordinator(bootstrap: str, group: str) -> int:
    """The broker id coordinating `group` (asked until the group is known and stable)."""
    admin = _admin(bootstrap)
    found: list[int] = []

    def ask() -> bool:
        try:
            desc = admin.describe_consumer_groups([group])[group].result(10)
        except (KafkaException, TimeoutError):
            return False
        found.append(int(desc.coordinator.id))
        return True

    wait_for(ask, 60, every_s=1, what=f"the coordinator of group {group}")
    return found[-1]


@pytest.mark.timeout(420)
def test_router_loses_and_duplicates_nothing_when_a_broker_is_sigkilled(
    cluster: Cluster,
    stack: Settings,
    make_client: Callable[..., ClientFixture],
    tmp_path: Path,
) -> None:
    clients = [make_client("kb") for _ in range(3)]
    for c in clients:  # duplicates stay visible: no merge may collapse them before we count
        _ch_rows(stack, f"SYSTEM STOP MERGES `{c.database}`.events_base")
    bootstrap = cluster.bootstrap
    # The module's own cluster: the raw topic holds only this test's events, so a new group
    # (auto.offset.reset=earliest) reads exactly them.
    group = unique_id("router-broker-kill")
    env = router_env(group, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    log_path = tmp_path / "router.log"
    router = subprocess.Popen(
        [sys.executable, "-m", "router"],
        cwd=REPO_ROOT,
        env=env,
        stdout=open(log_path, "ab"),  # noqa: SIM115 (closed with the process)
        stderr=subprocess.STDOUT,
    )
    producer = SteadyProducer(bootstrap, cluster.settings.kafka.raw_topic, clients, rate=250.0)
    figures: dict[str, object] = {}
    victim = ""
    try:
        producer.start()
        wait_for(lambda: sum(_landed(stack, clients).values()) > 0, 90, what="first routed rows")
        wait_for(lambda: producer.total() >= 1500, 60, what="1500 acknowledged events")
        # The worst broker to lose: the router group's coordinator (it also leads partitions).
        victim_id = _group_coordinator(bootstrap, group)
        victim = f"kafka-{victim_id}"
        pid = cluster.nodes()[victim].pid
        assert pid is not None
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        figures["killed"] = victim

        def flowing_on_every_partition() -> bool:
            after: dict[int, int] = {}
            for t, p, off in list(producer.acked):
                if t > killed_at and off < after.get(p, 1 << 62):
                    after[p] = off
            landed = _landed(stack, clients)
            parts = cluster.settings.kafka.topic_partitions
            return len(after) == parts and all(landed.get(p, -1) >= o for p, o in after.items())

        wait_for(flowing_on_every_partition, 120, every_s=0.25, what="rows flowing again")
        figures["recovery_s"] = round(time.monotonic() - killed_at, 1)
        assert cluster.nodes()[victim].pid is None

        restarted_at = time.monotonic()
        api.start_service(cluster.settings, victim, options=cluster.scratch.options)
        figures["restart_s"] = round(time.monotonic() - restarted_at, 1)

        def all_in_sync() -> bool:
            meta = _admin(bootstrap).list_topics(cluster.settings.kafka.raw_topic, timeout=10)
            parts = meta.topics[cluster.settings.kafka.raw_topic].partitions.values()
            return all(len(p.isrs) == BROKERS for p in parts)

        wait_for(all_in_sync, 120, every_s=0.5, what="the restarted broker back in every ISR")
        figures["isr_back_s"] = round(time.monotonic() - restarted_at, 1)
        time.sleep(3)  # some traffic with the node back
    finally:
        producer.finish()
    try:
        assert not producer.failures, producer.failures[:5]
        sent = producer.total()
        figures["sent"] = sent

        def all_landed() -> bool:
            rows = _ch_rows(
                stack,
                " UNION ALL ".join(
                    f"SELECT count() FROM `{c.database}`.events_base" for c in clients
                ),
            )
            return sum(int(r[0]) for r in rows) >= sent  # type: ignore[call-overload]

        wait_for(all_landed, 120, what=f"all {sent} events in ClickHouse")
        time.sleep(2)  # a late duplicate would land now
        # Everything is measured first, so a failure reports every client and the letters.
        stored: dict[str, list[str]] = {}
        for c in clients:
            rows = _ch_rows(stack, f"SELECT event_id FROM `{c.database}`.events_base")
            stored[c.client_id] = [str(r[0]) for r in rows]
            ids = stored[c.client_id]
            figures[c.client_id] = {"rows": len(ids), "distinct": len(set(ids))}
        letters = _dead_letters(bootstrap, cluster.settings.kafka.dead_letter_topic)
        figures["dead_letters"] = len(letters)
        for c in clients:
            ids, sent_ids = stored[c.client_id], set(producer.delivered[c.client_id])
            assert len(ids) == len(set(ids)), f"duplicate rows: {figures}"
            assert set(ids) == sent_ids, (
                f"{c.client_id}: {len(sent_ids - set(ids))} lost, "
                f"{len(set(ids) - sent_ids)} never sent; {figures}"
            )
        assert letters == [], letters[:5]
        assert router.poll() is None, "the router exited"
    finally:
        router.send_signal(signal.SIGTERM)
        code = router.wait(60)
        print(f"broker-kill figures: {figures}; router exit {code}; log {log_path}")
    assert code == 0
