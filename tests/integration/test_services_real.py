"""The four real servers answer the clients the pipeline uses (needs `python -m devstack up`,
which the module fixture does through devstack.api.ensure_up)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import clickhouse_connect
import psycopg2
import pytest
import redis
from clickhouse_driver import Client as NativeClient
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import NewTopic

from analytics_core import kafka_clients
from analytics_core.settings import Settings
from devstack import api

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings() -> Settings:
    s = Settings.from_env()
    api.ensure_up(s)
    return s


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# -- Kafka ------------------------------------------------------------------------------------


@pytest.fixture
def topic(settings: Settings) -> Iterator[str]:
    admin = kafka_clients.admin(settings.kafka)
    name = _unique("devstack_test")
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])[name].result(30)
    yield name
    admin.delete_topics([name])[name].result(30)


def _consumer(settings: Settings, group: str) -> Consumer:
    return kafka_clients.consumer(settings.kafka, group)


def _consume(consumer: Consumer, count: int, timeout: float = 30.0) -> list[Message]:
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            assert err.code() == KafkaError._PARTITION_EOF, err
            continue
        out.append(msg)
    return out


def test_kafka_produce_consume_commit_resume(settings: Settings, topic: str) -> None:
    producer = kafka_clients.producer(settings.kafka)
    sent = {f"event-{i}" for i in range(30)}
    for value in sorted(sent):
        producer.produce(topic, key=value.encode(), value=value.encode())
    assert producer.flush(30) == 0

    meta = kafka_clients.admin(settings.kafka).list_topics(topic, timeout=10)
    assert len(meta.topics[topic].partitions) == 3

    group = _unique("devstack_group")
    first = _consumer(settings, group)
    first.subscribe([topic])
    got_first = _consume(first, 12)
    assert len(got_first) == 12
    committed = first.commit(asynchronous=False)
    assert committed is not None
    first.close()

    second = _consumer(settings, group)
    second.subscribe([topic])
    got_second = _consume(second, len(sent) - 12)
    # Where the group resumed: exactly the committed offsets.
    positions = second.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    second.close()

    first_values = {(m.value() or b"").decode() for m in got_first}
    second_values = {(m.value() or b"").decode() for m in got_second}
    assert first_values.isdisjoint(second_values), "the second consumer re-read committed events"
    assert first_values | second_values == sent
    assert sum(tp.offset for tp in positions if tp.offset >= 0) == 12


def test_kafka_shared_topics_exist(settings: Settings) -> None:
    admin = kafka_clients.admin(settings.kafka)
    topics = admin.list_topics(timeout=10).topics
    for name in (settings.kafka.raw_topic, settings.kafka.dead_letter_topic):
        assert name in topics
        assert len(topics[name].partitions) == settings.kafka.topic_partitions


# -- ClickHouse -------------------------------------------------------------------------------


def test_clickhouse_http_and_native(settings: Settings) -> None:
    ch = settings.clickhouse
    http = clickhouse_connect.get_client(
        host=ch.host, port=ch.http_port, username=ch.user, password=ch.password, secure=ch.secure
    )
    native = NativeClient(
        host=ch.host, port=ch.native_port, user=ch.user, password=ch.password, secure=ch.secure
    )
    db = _unique("devstack_test")
    try:
        version = str(http.command("SELECT version()"))
        assert int(version.split(".")[0]) >= 24, version
        native_version = native.execute("SELECT version()")[0][0]
        assert native_version == version

        http.command(f"CREATE DATABASE {db}")
        http.command(
            f"CREATE TABLE {db}.events (id UInt64, name String) ENGINE = MergeTree ORDER BY id"
        )
        http.insert(f"{db}.events", [[1, "via-http"], [2, "via-http"]], column_names=["id", "name"])
        native.execute(f"INSERT INTO {db}.events (id, name) VALUES", [(3, "via-native")])

        rows_http = http.query(f"SELECT id, name FROM {db}.events ORDER BY id").result_rows
        rows_native = native.execute(f"SELECT id, name FROM {db}.events ORDER BY id")
        expected = [(1, "via-http"), (2, "via-http"), (3, "via-native")]
        assert [tuple(r) for r in rows_http] == expected
        assert [tuple(r) for r in rows_native] == expected
    finally:
        http.command(f"DROP DATABASE IF EXISTS {db}")
        http.close()
        native.disconnect()


# -- PostgreSQL -------------------------------------------------------------------------------


def test_postgres_roundtrip(settings: Settings) -> None:
    table = _unique("devstack_test")
    conn = psycopg2.connect(settings.postgres.dsn())
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text NOT NULL)")
            cur.execute(f"INSERT INTO {table} VALUES (%s, %s), (%s, %s)", (1, "a", 2, "b"))
            cur.execute(f"SELECT id, name FROM {table} ORDER BY id")
            assert cur.fetchall() == [(1, "a"), (2, "b")]
            cur.execute(f"DROP TABLE {table}")
    finally:
        conn.close()
    # The Dagster database exists too.
    psycopg2.connect(settings.postgres.dsn(settings.postgres.dagster_dbname)).close()


# -- Redis ------------------------------------------------------------------------------------


def test_redis_set_get(settings: Settings) -> None:
    r = settings.redis
    client = redis.Redis(host=r.host, port=r.port, db=r.db, password=r.password or None)
    key = _unique("devstack_test")
    try:
        assert client.set(key, "value", ex=60)
        assert client.get(key) == b"value"
    finally:
        client.delete(key)
        client.close()
