"""Identifier rules and typed settings."""

from __future__ import annotations

import pytest

from analytics_core.logging_setup import level_from_env
from analytics_core.naming import (
    InvalidIdentifier,
    database_name_for,
    quote_identifier,
    validate_client_id,
)
from analytics_core.settings import Settings, SettingsError, describe
from router.config import RouterSettings


@pytest.mark.parametrize("cid", ["acme", "a", "client-1_x", "0abc", "a" * 48])
def test_valid_client_ids(cid: str) -> None:
    assert validate_client_id(cid) == cid


@pytest.mark.parametrize(
    "cid", ["", "Acme", "-a", "a b", "a;drop", "a`b", "a" * 49, "ü", None, 5, "x'--"]
)
def test_invalid_client_ids(cid: object) -> None:
    with pytest.raises(InvalidIdentifier):
        validate_client_id(cid)


def test_database_names() -> None:
    assert database_name_for("acme-eu") == "client_acme_eu"
    assert quote_identifier("client_acme_eu") == "`client_acme_eu`"
    with pytest.raises(InvalidIdentifier):
        quote_identifier("x`; DROP")


def test_settings_defaults_and_overrides() -> None:
    s = Settings.from_env({})
    assert s.kafka.raw_topic == "shared_raw_events" and s.postgres.port == 25432
    s = Settings.from_env({"CLICKHOUSE_HTTP_PORT": "8123", "POSTGRES_PASSWORD": "secret"})
    assert s.clickhouse.http_port == 8123
    assert "secret" not in repr(s) and describe(s.postgres)["password"] == "***"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"POSTGRES_PORT": "abc"}, "POSTGRES_PORT"),
        ({"REDIS_PORT": "70000"}, "REDIS_PORT"),
        ({"CLICKHOUSE_SECURE": "maybe"}, "CLICKHOUSE_SECURE"),
        ({"ROUTER_FLUSH_MAX_ROWS": "0"}, "ROUTER_FLUSH_MAX_ROWS"),
        (
            {"ROUTER_FLUSH_MAX_ROWS": "500", "ROUTER_MAX_BUFFERED_ROWS": "100"},
            "ROUTER_MAX_BUFFERED_ROWS",
        ),
        ({"POSTGRES_CALL_TIMEOUT_S": "nan"}, "POSTGRES_CALL_TIMEOUT_S='nan' is not a finite"),
        ({"ROUTER_BREAKER_RETRY_S": "inf"}, "ROUTER_BREAKER_RETRY_S='inf' is not a finite"),
        ({"ROUTER_MAX_BUFFERED_MB": "99999999999999"}, "ROUTER_MAX_BUFFERED_MB=.* maximum"),
        ({"ROUTER_SESSION_TIMEOUT_MS": "999999999"}, "ROUTER_SESSION_TIMEOUT_MS=.* 3600000"),
        ({"PIPELINE_OPS_DATABASE": "bad-db;drop"}, "PIPELINE_OPS_DATABASE='bad-db;drop' is not"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "host:notaport"}, "'host:notaport' is not host:port"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:99999"}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "http://127.0.0.1:9092"}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "a:1,,b:2"}, "'' is not host:port"),
    ],
)
def test_bad_settings_fail_with_the_variable_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        RouterSettings.from_env(env)


def test_replay_key_defaults_to_the_development_key_only_on_loopback() -> None:
    from analytics_core.settings import DEVELOPMENT_REPLAY_KEY

    local = Settings.from_env({})
    assert local.replay.key == DEVELOPMENT_REPLAY_KEY and local.replay_key_problem() is None
    assert "***" in str(describe(local)["replay"])  # never logged
    for name, value in [
        ("POSTGRES_HOST", "db.internal"),
        ("REDIS_HOST", "10.0.0.5"),
        ("CLICKHOUSE_HOST", "clickhouse"),
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092,kafka-2:9092"),
    ]:
        problem = Settings.from_env({name: value}).replay_key_problem()
        assert problem is not None and "PIPELINE_REPLAY_KEY" in problem, name
    remote = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}
    short = Settings.from_env({**remote, "PIPELINE_REPLAY_KEY": "short"}).replay_key_problem()
    assert short is not None and "at least 32" in short
    good = Settings.from_env({**remote, "PIPELINE_REPLAY_KEY": "k" * 32})
    assert good.replay_key_problem() is None
    keys = Settings.from_env(
        {"PIPELINE_REPLAY_KEY": "k" * 32, "PIPELINE_REPLAY_KEY_PREVIOUS": "p" * 32}
    ).replay.keys()
    assert keys.current == b"k" * 32 and keys.previous == b"p" * 32 and "k" not in repr(keys)


def test_router_refuses_to_start_without_a_replay_key_off_loopback() -> None:

    with pytest.raises(SettingsError, match="PIPELINE_REPLAY_KEY"):
        RouterSettings.from_env({"CLICKHOUSE_HOST": "clickhouse.prod"})
    rs = RouterSettings.from_env(
        {"CLICKHOUSE_HOST": "clickhouse.prod", "PIPELINE_REPLAY_KEY": "x" * 40}
    )
    assert rs.common.replay.keys().current == b"x" * 40


def test_kafka_bootstrap_lists_take_protocols_and_ipv6() -> None:
    servers = "SASL_SSL://[::1]:9092, kafka-2.internal:9093,PLAINTEXT://10.0.0.7:9092"
    assert Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": servers}).kafka.bootstrap_servers == (
        servers
    )


@pytest.mark.parametrize(
    ("raw", "level"), [(None, "INFO"), ("debug", "DEBUG"), (" Warning ", "WARNING")]
)
def test_log_level_is_read_in_any_case(raw: str | None, level: str) -> None:
    assert level_from_env(raw) == level


def test_an_unknown_log_level_names_the_allowed_ones() -> None:
    with pytest.raises(
        SettingsError, match="LOG_LEVEL='loud' is not a log level; use one of DEBUG"
    ):
        level_from_env("loud")
