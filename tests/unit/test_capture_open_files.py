"""CAPTURE_MAX_CONNECTIONS and the open-files limit it needs (capture.open_files.plan)."""

from __future__ import annotations

import pytest

from analytics_core.settings import SettingsError
from capture.config import CaptureSettings
from capture.open_files import RESERVED_FILES, OpenFilesPlan, plan


def test_connection_limit_setting_defaults_and_remembers_whether_it_was_set() -> None:
    default = CaptureSettings.from_env({})
    assert (default.max_connections, default.max_connections_explicit) == (8192, False)
    assert default.max_concurrent_requests == 4096
    chosen = CaptureSettings.from_env({"CAPTURE_MAX_CONNECTIONS": "20000"})
    assert (chosen.max_connections, chosen.max_connections_explicit) == (20000, True)
    with pytest.raises(SettingsError, match="CAPTURE_MAX_CONNECTIONS"):
        CaptureSettings.from_env({"CAPTURE_MAX_CONNECTIONS": "many"})
    with pytest.raises(SettingsError, match="CAPTURE_MAX_CONNECTIONS"):
        CaptureSettings.from_env({"CAPTURE_MAX_CONNECTIONS": "3"})


def test_a_soft_limit_that_suffices_is_left_alone() -> None:
    assert plan(8192, False, 1_048_576, 1_048_576) == OpenFilesPlan(1_048_576, 8192)
    assert plan(100, True, 100 + RESERVED_FILES, 4096) == OpenFilesPlan(100 + RESERVED_FILES, 100)


def test_the_soft_limit_is_raised_up_to_what_the_connections_need() -> None:
    needed = 8192 + RESERVED_FILES
    assert plan(8192, False, 1024, 524_288) == OpenFilesPlan(needed, 8192)
    assert plan(8192, True, 1024, -1) == OpenFilesPlan(needed, 8192)  # hard: unlimited
    assert plan(8192, True, 1024, needed) == OpenFilesPlan(needed, 8192)


def test_the_default_is_lowered_to_fit_a_small_hard_limit_with_a_warning() -> None:
    decided = plan(8192, False, 1024, 4096)
    assert decided.soft_limit == 4096
    assert decided.max_connections == 4096 - RESERVED_FILES
    assert decided.warning is not None and "4096" in decided.warning


def test_an_explicit_limit_the_hard_limit_cannot_hold_fails_with_what_to_change() -> None:
    with pytest.raises(SettingsError) as refused:
        plan(20_000, True, 1024, 4096)
    text = str(refused.value)
    assert "CAPTURE_MAX_CONNECTIONS=20000" in text and "ulimit -Hn" in text
    assert f"at most {4096 - RESERVED_FILES}" in text
    with pytest.raises(SettingsError, match="hard limit is 200"):
        plan(8192, False, 100, 200)  # not even the default's floor fits
