"""Waiting for Kafka at a service's start (router, capture).

A topic that does not exist is a configuration error: the caller exits at once. Kafka
unreachable is an outage: the service waits for it (a warning at once, then once a minute;
retries every 1, 2, 4 ... 30 s) instead of exiting, so a process restarted during an outage
(a crash, a deployment, bin/dev's supervisor) comes back by itself when Kafka does, not in a
crash loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaException

from analytics_core import kafka_clients
from analytics_core.settings import KafkaSettings

WARN_EVERY_S = 60.0
MAX_DELAY_S = 30.0


@dataclass(frozen=True, slots=True)
class KafkaAway:
    detail: str


@dataclass(frozen=True, slots=True)
class TopicMissing:
    detail: str


def check_topics(
    kafka: KafkaSettings, topics: Sequence[str], logger: str, timeout_s: float = 5.0
) -> KafkaAway | TopicMissing | None:
    """Whether every topic can be read from now; librdkafka's own lines go to `logger`."""
    admin = kafka_clients.admin(kafka, logger=logging.getLogger(logger))
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        return KafkaAway(f"Kafka at {kafka.bootstrap_servers} is unreachable: {exc}")
    for topic in topics:
        if topic not in meta.topics:
            return TopicMissing(
                f"Kafka topic {topic!r} does not exist; create it (python -m devstack up does)"
            )
    return None


def wait_for_kafka(
    kafka: KafkaSettings,
    topics: Sequence[str],
    logger: str,
    log: logging.Logger,
    stop: threading.Event,
) -> TopicMissing | None:
    """None once every topic is there, or when `stop` is set (the caller checks it);
    TopicMissing at once."""
    delay = 1.0
    warned_at: float | None = None
    while True:
        found = check_topics(kafka, topics, logger)
        if not isinstance(found, KafkaAway):
            if warned_at is not None and found is None:
                log.info("Kafka reachable; starting", extra={"kafka": kafka.bootstrap_servers})
            return found
        now = time.monotonic()
        if warned_at is None or now - warned_at >= WARN_EVERY_S:
            log.warning(f"{found.detail}; waiting for it (not ready meanwhile)")
            warned_at = now
        if stop.wait(delay):
            return None
        delay = min(delay * 2, MAX_DELAY_S)
