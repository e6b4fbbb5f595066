"""The services' own Kafka clients come from `analytics_core.kafka_clients`: with
KAFKA_SECURITY_PROTOCOL=SASL_SSL the router's consumer, its dead-letter producer and the
capture service's producer all carry the TLS/SASL settings, and keep their own tuning."""

from __future__ import annotations

from pathlib import Path

import pytest

from capture.config import CaptureSettings
from capture.kafka_sink import producer_config as capture_producer_config
from router.config import RouterSettings
from router.dead_letter_producer import producer_config as dead_letter_producer_config
from router.kafka_consumer import consumer_config as router_consumer_config


@pytest.fixture
def sasl_ssl_env(tmp_path: Path) -> dict[str, str]:
    ca = tmp_path / "kafka-ca.pem"
    ca.write_text("x")
    return {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SSL_CA_LOCATION": str(ca),
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SASL_USERNAME": "pipeline",
        "KAFKA_SASL_PASSWORD": "s3cret",
        "ROUTER_GROUP_ID": "g",
        "ROUTER_INSTANCE_ID": "router-a",
    }


def _security(env: dict[str, str]) -> dict[str, object]:
    return {
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": env["KAFKA_SSL_CA_LOCATION"],
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "pipeline",
        "sasl.password": "s3cret",
    }


def test_router_consumer_carries_security_and_its_tuning(sasl_ssl_env: dict[str, str]) -> None:
    conf = router_consumer_config(RouterSettings.from_env(sasl_ssl_env))
    assert _security(sasl_ssl_env).items() <= conf.items()
    assert conf["group.id"] == "g" and conf["client.id"] == "router-a"
    assert conf["enable.auto.commit"] is False and conf["enable.auto.offset.store"] is False
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"


def test_dead_letter_producer_carries_security_and_its_tuning(
    sasl_ssl_env: dict[str, str],
) -> None:
    kafka = RouterSettings.from_env(sasl_ssl_env).common.kafka
    conf = dead_letter_producer_config(kafka, "router-a-dl")
    assert _security(sasl_ssl_env).items() <= conf.items()
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True
    assert conf["client.id"] == "router-a-dl" and conf["linger.ms"] == 20


def test_capture_producer_carries_security_and_its_tuning(sasl_ssl_env: dict[str, str]) -> None:
    settings = CaptureSettings.from_env(sasl_ssl_env)
    conf = capture_producer_config(settings, error_cb=lambda err: None)
    assert _security(sasl_ssl_env).items() <= conf.items()
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True
    assert conf["client.id"] == "capture" and conf["compression.type"] == "lz4"
    assert conf["linger.ms"] == settings.kafka_linger_ms


def test_plaintext_default_adds_no_credentials() -> None:
    conf = router_consumer_config(RouterSettings.from_env({}))
    assert conf["security.protocol"] == "PLAINTEXT"
    assert not any(key.startswith(("sasl.", "ssl.")) for key in conf)
