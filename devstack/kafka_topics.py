"""Create the pipeline's shared Kafka topics if they are missing (safe to call repeatedly).

Invariant: when `ensure_topics` returns, every partition of the topics answers a ListOffsets
request at its leader, so a client started next neither sees an unknown topic nor
NOT_LEADER_FOR_PARTITION (a broker applies new leaderships a moment after the controller
reports the topic created).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, TopicMetadata

from analytics_core.settings import Settings

log = logging.getLogger("devstack")

_quiet = logging.getLogger("devstack.librdkafka")
_quiet.setLevel(logging.CRITICAL)
_quiet.propagate = False


def admin_client(bootstrap_servers: str) -> AdminClient:
    """An AdminClient whose librdkafka connection noise goes to a silenced logger."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, "logger": _quiet}
    return AdminClient(conf)


def ensure_topics(
    settings: Settings,
    *,
    topics: list[str] | None = None,
    partitions: int | None = None,
    bootstrap_servers: str | None = None,
    replication_factor: int = 1,
    min_insync_replicas: int = 1,
    timeout: float = 30.0,
) -> list[str]:
    """Create `topics` (default: the raw and dead-letter topics) if missing; return those created.

    New topics get `replication_factor` replicas and `min.insync.replicas`. Existing topics are
    left as they are; a partition count or replication factor different from the wanted one is
    logged as a warning, never changed.
    """
    k = settings.kafka
    wanted = topics if topics is not None else [k.raw_topic, k.dead_letter_topic]
    count = partitions if partitions is not None else k.topic_partitions
    bootstrap = bootstrap_servers or k.bootstrap_servers
    deadline = time.monotonic() + timeout
    created = _create_missing(
        admin_client(bootstrap), wanted, count, replication_factor, min_insync_replicas, deadline
    )
    _wait_until_served(bootstrap, wanted, deadline)
    return created


def _create_missing(
    admin: AdminClient,
    wanted: list[str],
    count: int,
    replication_factor: int,
    min_insync_replicas: int,
    deadline: float,
) -> list[str]:
    created: list[str] = []
    while True:
        meta = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
        missing = [t for t in wanted if t not in meta.topics]
        for t in wanted:
            if t in meta.topics:
                _warn_if_different(meta.topics[t], count, replication_factor)
        if not missing:
            return created
        futures = admin.create_topics(
            [
                NewTopic(
                    t,
                    num_partitions=count,
                    replication_factor=replication_factor,
                    config={"min.insync.replicas": str(min_insync_replicas)},
                )
                for t in missing
            ],
            operation_timeout=10,
        )
        retry = False
        for topic, fut in futures.items():
            try:
                fut.result(timeout=max(1.0, deadline - time.monotonic()))
                created.append(topic)
                log.info(
                    "created topic %s (%d partitions, replication factor %d, "
                    "min.insync.replicas %d)",
                    topic,
                    count,
                    replication_factor,
                    min_insync_replicas,
                )
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                # A broker that registered a moment ago may not count yet for the replicas.
                transient = err.retriable() or err.code() == KafkaError.INVALID_REPLICATION_FACTOR
                if not transient or time.monotonic() >= deadline:
                    raise
                retry = True
        if not retry:
            return created
        time.sleep(0.5)


def _warn_if_different(topic: TopicMetadata, partitions: int, replication_factor: int) -> None:
    have = len(topic.partitions)
    if have != partitions:
        log.warning(
            "topic %s has %d partitions, settings want %d (left unchanged)",
            topic.topic,
            have,
            partitions,
        )
    replicas = min((len(p.replicas) for p in topic.partitions.values()), default=0)
    if replicas and replicas < replication_factor:
        log.warning(
            "topic %s has %d replicas per partition, this cluster wants %d (left unchanged; "
            "recreate it or reassign its partitions)",
            topic.topic,
            replicas,
            replication_factor,
        )


def _wait_until_served(bootstrap: str, topics: list[str], deadline: float) -> None:
    """Wait until every partition of `topics` answers ListOffsets (see the module doc)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": "devstack-readiness",
        "logger": _quiet,
    }
    consumer = Consumer(conf)
    try:
        while True:
            problem = _unserved(consumer, topics)
            if problem is None:
                return
            if time.monotonic() >= deadline:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, problem))
            time.sleep(0.2)
    finally:
        consumer.close()


def _unserved(consumer: Consumer, topics: list[str]) -> str | None:
    """None when every partition's leader serves it, else the first one that does not."""
    for topic in topics:
        try:
            meta = consumer.list_topics(topic, timeout=5).topics[topic]
            if meta.error is not None:
                return f"topic {topic}: {meta.error}"
            for p in meta.partitions:
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
        except KafkaException as exc:
            return f"topic {topic}: {exc}"
    return None
