"""The one place Kafka clients are configured: bootstrap servers, TLS/SASL and safe defaults.

Invariants:
- every producer of the pipeline writes with `acks=all` and idempotence, so a broker's
  death never loses an acknowledged message nor duplicates one through internal retries;
- every consumer commits explicitly (`enable.auto.commit=false`): offsets move only when
  the work they cover is durable;
- security settings (KAFKA_SECURITY_PROTOCOL, KAFKA_SSL_CA_LOCATION, KAFKA_SASL_*) apply to
  every client alike, so no process can be left talking plaintext to a TLS-only cluster.
- librdkafka's own lines (a refused connection, every reconnect: ~20 a second with the
  brokers away) reach Python logging, never raw `%3|...` lines on stderr: the services
  name their own logger, every other client (Dagster jobs, tools) logs through
  `analytics.kafka`, each shape of line once a minute.
Callers add what is theirs (client id, group id, batching) through `overrides`.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from analytics_core.logging_setup import RepeatedLines
from analytics_core.settings import KafkaSettings

KAFKA_LOG = logging.getLogger("analytics.kafka")
KAFKA_LOG.addFilter(RepeatedLines())


def common_config(kafka: KafkaSettings) -> dict[str, Any]:
    """Bootstrap servers and security: the part every client shares."""
    conf: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "security.protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL") and kafka.ssl_ca_location:
        conf["ssl.ca.location"] = kafka.ssl_ca_location
    if kafka.security_protocol.startswith("SASL_"):
        conf["sasl.mechanism"] = kafka.sasl_mechanism
        conf["sasl.username"] = kafka.sasl_username
        conf["sasl.password"] = kafka.sasl_password
    return conf


def producer_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    conf = common_config(kafka)
    conf.update({"acks": "all", "enable.idempotence": True})
    conf.update(overrides)
    if conf.get("acks") not in ("all", -1, "-1") or conf.get("enable.idempotence") is not True:
        raise ValueError("pipeline producers write with acks=all and enable.idempotence=true")
    return conf


def consumer_config(kafka: KafkaSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    conf = common_config(kafka)
    conf.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    conf.update(overrides)
    return conf


def producer(kafka: KafkaSettings, **overrides: Any) -> Producer:
    return Producer(producer_config(kafka, **{"logger": KAFKA_LOG, **overrides}))


def consumer(kafka: KafkaSettings, group_id: str, **overrides: Any) -> Consumer:
    return Consumer(consumer_config(kafka, group_id, **{"logger": KAFKA_LOG, **overrides}))


def admin(kafka: KafkaSettings, **overrides: Any) -> AdminClient:
    conf = common_config(kafka)
    conf.update(overrides)
    return AdminClient(conf)
