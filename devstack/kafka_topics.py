"""Create the pipeline's shared Kafka topics if they are missing (safe to call repeatedly)."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

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
    timeout: float = 30.0,
) -> list[str]:
    """Create `topics` (default: the raw and dead-letter topics) if missing; return those created.

    Existing topics are left as they are; a partition count different from the wanted one is
    logged as a warning, never changed.
    """
    k = settings.kafka
    wanted = topics if topics is not None else [k.raw_topic, k.dead_letter_topic]
    count = partitions if partitions is not None else k.topic_partitions
    admin = admin_client(k.bootstrap_servers)
    deadline = time.monotonic() + timeout
    created: list[str] = []
    while True:
        meta = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
        missing = [t for t in wanted if t not in meta.topics]
        for t in wanted:
            if t in meta.topics and len(meta.topics[t].partitions) != count:
                log.warning(
                    "topic %s has %d partitions, settings want %d (left unchanged)",
                    t,
                    len(meta.topics[t].partitions),
                    count,
                )
        if not missing:
            return created
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=count, replication_factor=1) for t in missing],
            operation_timeout=10,
        )
        retry = False
        for topic, fut in futures.items():
            try:
                fut.result(timeout=max(1.0, deadline - time.monotonic()))
                created.append(topic)
                log.info("created topic %s (%d partitions)", topic, count)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                if not err.retriable() or time.monotonic() >= deadline:
                    raise
                retry = True
        if not retry:
            return created
        time.sleep(0.5)
