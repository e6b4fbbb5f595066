"""The router and capture started while Kafka is unreachable wait for it and start by
themselves when it answers (no exit, no crash loop under a supervisor); a topic that does
not exist is still a configuration error at once.

Kafka "comes back" through a TCP forwarder that starts listening on the bootstrap port the
services were given; once bootstrapped, clients talk to the broker's advertised address.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from analytics_core.settings import Settings
from tests.conftest import free_port, router_env, unique_id, wait_for
from tests.integration.router_support import REPO, private_topics

pytestmark = pytest.mark.integration


@contextmanager
def forwarder(port: int, target: tuple[str, int]) -> Iterator[None]:
    """127.0.0.1:port -> target, both ways, for as long as the block runs."""
    server = socket.create_server(("127.0.0.1", port))
    stop = threading.Event()

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        server.close()


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # the child owns it
    )


def test_router_and_capture_wait_for_kafka_then_start(stack: Settings, tmp_path: Path) -> None:
    host, kafka_port = stack.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)
    bootstrap = free_port()
    metrics, capture_port = free_port(), free_port()
    with private_topics(stack, "nokafka") as own:
        topics = {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{bootstrap}",
            "KAFKA_RAW_TOPIC": own.kafka.raw_topic,
            "KAFKA_DEAD_LETTER_TOPIC": own.kafka.dead_letter_topic,
        }
        router_log, capture_log = tmp_path / "router.log", tmp_path / "capture.log"
        env = router_env(unique_id("nokafka"), ROUTER_METRICS_PORT=str(metrics), **topics)
        router = start("router", env, router_log)
        capture = start(
            "capture", {**os.environ, **topics, "CAPTURE_PORT": str(capture_port)}, capture_log
        )
        try:
            for log in (router_log, capture_log):
                wait_for(
                    lambda log=log: any(  # type: ignore[misc]
                        "waiting for it" in str(line.get("msg")) for line in lines(log)
                    ),
                    30,
                    what=f"the waiting line in {log.name}",
                )
            assert router.poll() is None and capture.poll() is None
            # The router says it is alive and not ready; it has not exited.
            assert status(f"http://127.0.0.1:{metrics}/healthz") == 200
            assert status(f"http://127.0.0.1:{metrics}/readyz") == 503
            with forwarder(bootstrap, (host, int(kafka_port))):
                wait_for(
                    lambda: status(f"http://127.0.0.1:{metrics}/readyz") == 200,
                    90,
                    what="the router ready once Kafka answers",
                )
                wait_for(
                    lambda: status(f"http://127.0.0.1:{capture_port}/readyz") == 200,
                    90,
                    what="capture ready once Kafka answers",
                )
                for proc in (router, capture):
                    proc.send_signal(signal.SIGTERM)
                assert router.wait(60) == 0 and capture.wait(60) == 0
        finally:
            for proc in (router, capture):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(30)
    for log in (router_log, capture_log):
        said = lines(log)  # every line JSON, librdkafka's included
        assert any(line.get("msg") == "Kafka reachable; starting" for line in said), log.name


def test_a_topic_that_does_not_exist_is_refused_at_once(stack: Settings) -> None:
    env = {**os.environ, "KAFKA_RAW_TOPIC": "no_such_topic_" + unique_id("t").replace("-", "_")}
    for module in ("router", "capture"):
        extra = {"ROUTER_METRICS_PORT": "0"} if module == "router" else {}
        done = subprocess.run(
            [sys.executable, "-m", module],
            cwd=REPO,
            env={**env, **extra, "CAPTURE_PORT": str(free_port())},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (module, done.stderr[-2000:])
        assert "does not exist; create it" in done.stderr
