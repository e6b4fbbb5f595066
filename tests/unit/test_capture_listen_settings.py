"""Where capture listens: refused at start, in one line, before granian (whose own failure
is a worker traceback) is started."""

from __future__ import annotations

import socket

import pytest

from analytics_core.settings import SettingsError
from capture.__main__ import listen_problem
from capture.config import CaptureSettings


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1"])
def test_ip_addresses_are_listen_addresses(host: str) -> None:
    assert CaptureSettings.from_env({"CAPTURE_HOST": host}).host == host


@pytest.mark.parametrize("host", ["localhost", "capture.example", "127.0.0.256"])
def test_a_name_is_refused_with_what_to_use(host: str) -> None:
    with pytest.raises(SettingsError, match=f"CAPTURE_HOST='{host}' is not an IP address; use"):
        CaptureSettings.from_env({"CAPTURE_HOST": host})


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CAPTURE_MAX_INFLIGHT_MB", "99999999999999"), ("CAPTURE_KAFKA_QUEUE_MB", "2097152")],
)
def test_memory_bounds_have_a_ceiling(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"{variable}={value} is above the maximum"):
        CaptureSettings.from_env({variable: value})


def test_a_port_in_use_is_named_with_what_to_set() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        problem = listen_problem("127.0.0.1", port)
    assert problem is not None
    assert f"cannot listen on 127.0.0.1:{port}" in problem and "set CAPTURE_PORT" in problem
    assert listen_problem("127.0.0.1", port) is None  # free again once the squatter left
