"""Helpers for tests that run the router as a real process and look at Kafka from outside."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import NewTopic

from analytics_core import kafka_clients
from analytics_core.dead_letter import DeadLetter, read_dead_letter
from analytics_core.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def router_process(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "router"],
        cwd=REPO,
        env=env,
        stdout=open(log_path, "ab"),  # the child owns it
        stderr=subprocess.STDOUT,
    )


def _consumer(settings: Settings, group: str) -> Consumer:
    return kafka_clients.consumer(settings.kafka, group)


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    c = _consumer(settings, f"probe-{uuid.uuid4().hex[:8]}")
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (-1001 when none)."""
    c = _consumer(settings, group)
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        found = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in found}
    finally:
        c.close()


def letters_between(
    settings: Settings, since: dict[int, int], until: dict[int, int]
) -> list[tuple[DeadLetter, bytes | None]]:
    """Every dead letter written between two sets of end offsets of the dead-letter topic."""
    topic = settings.kafka.dead_letter_topic
    c = _consumer(settings, f"dl-scan-{uuid.uuid4().hex[:8]}")
    want = {p: o for p, o in until.items() if o > since.get(p, 0)}
    out: list[tuple[DeadLetter, bytes | None]] = []
    try:
        if not want:
            return out
        c.assign([TopicPartition(topic, p, since.get(p, 0)) for p in want])
        left = dict(want)
        while left:
            msgs = c.consume(500, timeout=5)
            if not msgs:
                raise AssertionError(f"dead-letter topic stopped short of {left}")
            for m in msgs:
                if m.error():
                    continue
                p, o = m.partition(), m.offset()
                assert p is not None and o is not None
                if p in left and o < left[p]:
                    out.append((read_dead_letter(m.headers()), m.value()))  # type: ignore[arg-type]
                    if o + 1 >= left[p]:
                        del left[p]
    finally:
        c.close()
    return out


def metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())
    except (urllib.error.URLError, OSError):
        return ""


def metric_values(text: str, name: str) -> dict[str, float]:
    """label text -> value for every sample of `name`."""
    return {
        labels: float(value)
        for labels, value in re.findall(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)
    }


def assignment(settings: Settings, group: str, client_id: str) -> set[int]:
    """Partitions the group's member with this client.id owns now."""
    admin = kafka_clients.admin(settings.kafka)
    [future] = admin.describe_consumer_groups([group]).values()
    description = future.result(timeout=10)
    for member in description.members:
        if member.client_id == client_id and member.assignment is not None:
            return {tp.partition for tp in member.assignment.topic_partitions}
    return set()


@contextmanager
def private_topics(stack: Settings, prefix: str, partitions: int = 3) -> Iterator[Settings]:
    """`stack` with a raw and a dead-letter topic of its own (deleted after): a router and
    a reprocessing run on them see no other test's traffic."""
    admin = kafka_clients.admin(stack.kafka)
    tag = uuid.uuid4().hex[:8]
    raw, dead = f"{prefix}_raw_{tag}", f"{prefix}_dead_{tag}"
    topics = [NewTopic(t, num_partitions=partitions) for t in (raw, dead)]
    for f in admin.create_topics(topics).values():
        f.result(30)
    try:
        yield replace(stack, kafka=replace(stack.kafka, raw_topic=raw, dead_letter_topic=dead))
    finally:
        for f in admin.delete_topics([raw, dead]).values():
            f.result(30)


class _RawName(str):
    """A header name kafka-python writes as these bytes, whatever they are (it encodes
    names with str.encode): the way to send a name that is not UTF-8 from Python."""

    raw: bytes

    def __new__(cls, raw: bytes) -> _RawName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def produce_with_raw_header_name(
    settings: Settings, topic: str, values: list[bytes], name: bytes
) -> list[tuple[int, int]]:
    """Produces each value with one header whose name is `name` verbatim (kafka-python,
    plaintext listeners only), acknowledged; their (partition, offset)s."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    try:
        futures = [producer.send(topic, value=v, headers=[(_RawName(name), b"v")]) for v in values]
        return [(f.get(timeout=30).partition, f.get(timeout=30).offset) for f in futures]
    finally:
        producer.close(timeout=10)
