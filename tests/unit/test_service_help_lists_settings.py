"""`python -m router --help` and `python -m capture --help` name every variable their
settings read (found by reading the settings with an environment that records each name
asked for), so a new setting can not be left out of the help; --version is the project's."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from typing import Any

import pytest

import capture
import router
from capture.__main__ import COMMON_ENV as CAPTURE_COMMON
from capture.__main__ import build_parser as capture_parser
from capture.config import CAPTURE_ENV, CaptureSettings
from router.__main__ import COMMON_ENV as ROUTER_COMMON
from router.__main__ import build_parser as router_parser
from router.config import ROUTER_ENV, RouterSettings
from tests.settings_tables import RecordingEnv, expand

# Read by the shared settings but not a service's own business: devstack's and Dagster's.
NOT_THE_SERVICES = {
    "PIPELINE_STATE_DIR",
    "KAFKA_CONTROLLER_PORT",
    "KAFKA_TOPIC_PARTITIONS",
    "DAGSTER_POSTGRES_DB",
}


def names(rows: Iterable[tuple[str, str, str]]) -> set[str]:
    return {variable for name, default, _ in rows for variable, _d in expand(name, default)}


@pytest.mark.parametrize(
    ("read", "rows", "parser", "unused"),
    [
        (RouterSettings.from_env, (*ROUTER_COMMON, *ROUTER_ENV), router_parser, set()),
        # Capture writes no dead letters.
        (
            CaptureSettings.from_env,
            (*CAPTURE_COMMON, *CAPTURE_ENV),
            capture_parser,
            {"KAFKA_DEAD_LETTER_TOPIC"},
        ),
    ],
    ids=["router", "capture"],
)
def test_help_names_every_variable_the_settings_read(
    read: Any, rows: Any, parser: Any, unused: set[str]
) -> None:
    env = RecordingEnv()
    read(env)
    listed = names(rows)
    missing = sorted(env.asked - listed - NOT_THE_SERVICES - unused)
    assert not missing, f"not in --help: {missing}"
    assert "LOG_LEVEL" in listed  # read by main() itself, before the settings
    text = parser().format_help()
    assert all(name in text for name, _default, _meaning in rows)


def test_services_report_the_projects_version() -> None:
    assert router.VERSION == capture.VERSION == importlib.metadata.version("analytics-pipeline")
