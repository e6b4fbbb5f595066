"""`.env.example` lists every setting, with its default (README "Configuration" says so).

The settings' machine-readable tables (`ROUTER_ENV`, `CAPTURE_ENV` and the servers' table
each service's --help prints) are the single source: a variable added to one of them and not
to `.env.example` fails here, and so does a default that differs. Each settings reader, those
without a table too (alerts, reconciliation, devstack), is also run with an environment that
records the variables it asks for: each must be in `.env.example`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from analytics_core.alerts.config import AlertSettings
from analytics_core.reconciliation.run import ReconciliationOptions
from analytics_core.settings import Settings
from capture.__main__ import COMMON_ENV as CAPTURE_COMMON_ENV
from capture.config import CAPTURE_ENV, CaptureSettings
from devstack.options import load_options
from router.__main__ import COMMON_ENV as ROUTER_COMMON_ENV
from router.config import ROUTER_ENV, RouterSettings
from tests.settings_tables import RecordingEnv, expand

REPO = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = REPO / ".env.example"

# `NAME=value  # comment`, also commented out (`# NAME=value`, an example of a family).
_LINE = re.compile(r"^(?:#\s*)?([A-Z][A-Z0-9_]*)=(\S*)")

TABLES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "router.config.ROUTER_ENV": ROUTER_ENV,
    "capture.config.CAPTURE_ENV": CAPTURE_ENV,
    "router.__main__.COMMON_ENV": ROUTER_COMMON_ENV,
    "capture.__main__.COMMON_ENV": CAPTURE_COMMON_ENV,
}


# Every settings reader, those without a table too; each reads the environment it is given.
READERS: dict[str, Callable[[Mapping[str, str]], object]] = {
    "Settings": Settings.from_env,
    "RouterSettings": RouterSettings.from_env,
    "CaptureSettings": CaptureSettings.from_env,
    "AlertSettings": AlertSettings.from_env,
    "ReconciliationOptions": ReconciliationOptions.from_env,
    "devstack": load_options,
}


def example() -> dict[str, str]:
    """Each variable of .env.example and its value."""
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _LINE.match(line)
        if match:
            found.setdefault(match.group(1), match.group(2))
    return found


def table_rows() -> list[tuple[str, str, str]]:
    return [
        (table, variable, value)
        for table, rows in TABLES.items()
        for name, default, _meaning in rows
        for variable, value in expand(name, default)
    ]


def test_the_expansion_of_joined_rows() -> None:
    assert list(expand("POSTGRES_HOST/PORT", "127.0.0.1/25432")) == [
        ("POSTGRES_HOST", "127.0.0.1"),
        ("POSTGRES_PORT", "25432"),
    ]
    assert list(expand("CLICKHOUSE_HOST/HTTP_PORT", "h/1")) == [
        ("CLICKHOUSE_HOST", "h"),
        ("CLICKHOUSE_HTTP_PORT", "1"),
    ]
    assert [n for n, _ in expand("PIPELINE_REPLAY_KEY/_PREVIOUS", "<key>/")] == [
        "PIPELINE_REPLAY_KEY",
        "PIPELINE_REPLAY_KEY_PREVIOUS",
    ]


def test_every_variable_of_the_tables_is_in_env_example() -> None:
    listed = example()
    rows = table_rows()
    assert len(rows) > 60, "the tables were not found"
    missing = sorted(
        {f"{variable} ({table})" for table, variable, _ in rows if variable not in listed}
    )
    assert not missing, f".env.example lacks {', '.join(missing)}"


def test_env_example_shows_the_tables_defaults() -> None:
    listed = example()
    wrong = [
        f"{variable}: .env.example {listed[variable]!r}, {table} {default!r}"
        for table, variable, default in table_rows()
        # "(none)", "<hostname>-<pid>": a default described, not a value to compare
        if variable in listed and not default.startswith(("(", "<"))
        if listed[variable] != default
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("reader", READERS)
def test_every_variable_the_code_reads_is_in_env_example(reader: str) -> None:
    env = RecordingEnv()
    READERS[reader](env)
    assert env.asked, f"{reader} read no variable"
    missing = sorted(env.asked - set(example()))
    assert not missing, f".env.example lacks {', '.join(missing)} (read by {reader})"


def test_env_example_has_each_variable_once() -> None:
    names = [
        m.group(1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if (m := _LINE.match(line)) and not line.startswith("#")
    ]
    twice = sorted({n for n in names if names.count(n) > 1})
    assert not twice, f".env.example sets {', '.join(twice)} more than once"
