"""Identifier rules and typed settings."""

from __future__ import annotations

import pytest

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
    assert s.kafka.raw_topic == "shared_raw_events" and s.postgres.port == 55432
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
    ],
)
def test_bad_settings_fail_with_the_variable_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        RouterSettings.from_env(env)
