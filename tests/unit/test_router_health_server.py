"""The router's /metrics, /healthz and /readyz server with clients that hang up."""

from __future__ import annotations

import socket
import struct
import time
import urllib.request

import pytest

from router.metrics import HealthServer, RouterMetrics


def test_a_client_that_resets_mid_answer_costs_no_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    server = HealthServer(RouterMetrics(), lambda: True, 0)
    server.start()
    try:
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", server.port)) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                # Close with a reset (SO_LINGER 0): a scraper or probe that timed out.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.read() == b"ok\n"  # still serving
    finally:
        server.stop()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[:3000]
