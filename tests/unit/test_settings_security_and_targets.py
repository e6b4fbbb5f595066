"""TLS/SASL settings and ClickHouse targets: parsed once, refused early with what to fix,
and applied alike to every Kafka client through `analytics_core.kafka_clients`."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics_core import kafka_clients
from analytics_core.settings import DEFAULT_TARGET, Settings, SettingsError, describe


def test_defaults_are_the_local_plaintext_stack_with_one_target() -> None:
    s = Settings.from_env({})
    assert s.kafka.security_protocol == "PLAINTEXT"
    assert s.postgres.sslmode == "prefer"  # libpq's own default: unchanged behaviour
    assert "sslmode=prefer" in s.postgres.dsn()
    assert not s.redis.tls and s.clickhouse.verify and not s.clickhouse.secure
    assert list(s.clickhouse_targets()) == [DEFAULT_TARGET]
    assert s.clickhouse_targets()[DEFAULT_TARGET] is s.clickhouse


def test_postgres_tls_reaches_the_dsn_and_a_missing_ca_file_is_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = Settings.from_env({"POSTGRES_SSLMODE": "verify-full", "POSTGRES_SSLROOTCERT": str(ca)})
    assert f"sslmode=verify-full sslrootcert='{ca}'" in s.postgres.dsn()
    with pytest.raises(SettingsError, match="POSTGRES_SSLMODE='sometimes' is not one of"):
        Settings.from_env({"POSTGRES_SSLMODE": "sometimes"})
    with pytest.raises(SettingsError, match=r"POSTGRES_SSLROOTCERT=.* is not a readable file"):
        Settings.from_env({"POSTGRES_SSLROOTCERT": str(tmp_path / "missing.pem")})


def test_kafka_sasl_ssl_applies_to_every_client_kind(tmp_path: Path) -> None:
    ca = tmp_path / "kafka-ca.pem"
    ca.write_text("x")
    env = {
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SSL_CA_LOCATION": str(ca),
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "router",
        "KAFKA_SASL_PASSWORD": "s3cret",
    }
    kafka = Settings.from_env(env).kafka
    expected = {
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(ca),
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "router",
        "sasl.password": "s3cret",
    }
    for conf in (
        kafka_clients.producer_config(kafka, **{"client.id": "p"}),
        kafka_clients.consumer_config(kafka, "g"),
        kafka_clients.common_config(kafka),
    ):
        assert expected.items() <= conf.items()
    assert "s3cret" not in repr(kafka) and describe(kafka)["sasl_password"] == "***"


def test_kafka_security_mistakes_fail_fast_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="KAFKA_SECURITY_PROTOCOL='TLS' is not one of"):
        Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "tls"})
    with pytest.raises(SettingsError, match="needs KAFKA_SASL_MECHANISM"):
        Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(SettingsError, match="needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"})
    with pytest.raises(SettingsError, match="uses no SASL"):
        Settings.from_env({"KAFKA_SASL_MECHANISM": "PLAIN"})


def test_producers_are_always_acks_all_and_idempotent() -> None:
    kafka = Settings.from_env({}).kafka
    conf = kafka_clients.producer_config(kafka, **{"linger.ms": 5})
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True
    assert conf["linger.ms"] == 5
    with pytest.raises(ValueError, match="acks=all"):
        kafka_clients.producer_config(kafka, acks=1)
    consumer = kafka_clients.consumer_config(kafka, "g")
    assert consumer["enable.auto.commit"] is False and consumer["group.id"] == "g"


def test_extra_clickhouse_targets_are_read_by_name() -> None:
    env = {
        "CLICKHOUSE_TARGETS": "ch2, eu_west",
        "CLICKHOUSE_CH2_HOST": "10.0.0.2",
        "CLICKHOUSE_CH2_HTTP_PORT": "8123",
        "CLICKHOUSE_CH2_PASSWORD": "pw",
        "CLICKHOUSE_CH2_SECURE": "true",
        "CLICKHOUSE_EU_WEST_HOST": "ch.eu.example",
        "CLICKHOUSE_EU_WEST_CLUSTER": "analytics",
        "PIPELINE_OPS_DATABASE": "ops",
    }
    targets = Settings.from_env(env).clickhouse_targets()
    assert list(targets) == ["default", "ch2", "eu_west"]
    ch2 = targets["ch2"]
    assert (ch2.host, ch2.http_port, ch2.secure, ch2.target) == ("10.0.0.2", 8123, True, "ch2")
    assert ch2.password == "pw" and "pw" not in repr(ch2)
    assert targets["eu_west"].cluster == "analytics" and targets["eu_west"].ops_database == "ops"
    assert describe(Settings.from_env(env))["extra_targets"][0]["password"] == "***"  # type: ignore[index]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLICKHOUSE_TARGETS": "CH2"}, "'CH2' is not a target name"),
        ({"CLICKHOUSE_TARGETS": "default"}, "'default' is not a target name"),
        ({"CLICKHOUSE_TARGETS": "ch2"}, "CLICKHOUSE_CH2_HOST is not set"),
        (
            {"CLICKHOUSE_TARGETS": "ch2,ch2", "CLICKHOUSE_CH2_HOST": "h"},
            "names 'ch2' twice",
        ),
        (
            {
                "CLICKHOUSE_TARGETS": "ch2",
                "CLICKHOUSE_CH2_HOST": "h",
                "CLICKHOUSE_CH2_HTTP_PORT": "x",
            },
            "CLICKHOUSE_CH2_HTTP_PORT='x' is not an integer",
        ),
    ],
)
def test_bad_targets_fail_fast_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_dagster_storage_gets_postgres_tls_through_libpq_variables(tmp_path: Path) -> None:
    from analytics_pipeline.dagster_home import dagster_env

    ca = tmp_path / "pg-ca.pem"
    ca.write_text("x")
    env = {"POSTGRES_SSLMODE": "verify-full", "POSTGRES_SSLROOTCERT": str(ca)}
    exported = dagster_env(Settings.from_env(env), tmp_path)
    assert exported["PGSSLMODE"] == "verify-full" and exported["PGSSLROOTCERT"] == str(ca)
    assert "PGSSLROOTCERT" not in dagster_env(Settings.from_env({}), tmp_path)
