"""devstack itself: idempotent `up`, data surviving down/up, clear failures, status.

The main stack (default ports, $PIPELINE_STATE_DIR) is only checked, never stopped: other
test modules and developers share it. Everything that stops servers (down/up, one service
down and back, taken ports, a locked data dir) runs against a scratch stack in a temporary
state dir on free ports, which is wiped at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path

import clickhouse_connect
import psycopg2
import pytest
import redis
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from analytics_core import kafka_clients
from analytics_core.settings import REPO_ROOT, Settings
from devstack import api
from devstack.options import load_options
from tests.conftest import free_port_block
from tests.integration.local_topology import scratch_env, scratch_topology

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings() -> Settings:
    s = Settings.from_env()
    api.ensure_up(s)
    return s


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A second, private stack (the services in DEVSTACK_SERVICES) for the disruptive tests."""
    state = tmp_path_factory.mktemp("devstack") / "state"
    s = Settings.from_env({**os.environ, **_scratch_env(state)})
    try:
        api.ensure_up(s)
        yield s
    finally:
        api.reset(s)


def _managed(settings: Settings) -> dict[str, api.ServiceStatus]:
    return {s.name: s for s in api.status(settings) if s.managed}


def _free_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    """`count` distinct ports free now, none of `avoid` (ports handed out earlier and
    closed since are free again, and the kernel may hand them out a second time)."""
    socks = []
    try:
        while len(socks) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] in avoid:
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _scratch_env(state_dir: Path) -> dict[str, str]:
    """State dir + free ports for the locally managed services (external ones keep theirs)."""
    pg, rd, kb, kc, ch_http, ch_native = _free_ports(6)
    managed = api.managed_services()
    env = {"PIPELINE_STATE_DIR": str(state_dir)}
    if "postgres" in managed:
        env["POSTGRES_PORT"] = str(pg)
    if "redis" in managed:
        env["REDIS_PORT"] = str(rd)
    if "kafka" in managed:
        env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{kb}"
        env["KAFKA_CONTROLLER_PORT"] = str(kc)
    if "clickhouse" in managed:
        env["CLICKHOUSE_HTTP_PORT"] = str(ch_http)
        env["CLICKHOUSE_NATIVE_PORT"] = str(ch_native)
    return env


def _full_scratch_env(state_dir: Path) -> dict[str, str]:
    """Free ports for all four services (the failure tests never start the others)."""
    pg, rd, kb, kc, ch_http, ch_native = _free_ports(6)
    return {
        "PIPELINE_STATE_DIR": str(state_dir),
        "POSTGRES_PORT": str(pg),
        "REDIS_PORT": str(rd),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kb}",
        "KAFKA_CONTROLLER_PORT": str(kc),
        "CLICKHOUSE_HTTP_PORT": str(ch_http),
        "CLICKHOUSE_NATIVE_PORT": str(ch_native),
    }


def _ch(settings: Settings) -> clickhouse_connect.driver.Client:
    ch = settings.clickhouse
    return clickhouse_connect.get_client(
        host=ch.host, port=ch.http_port, username=ch.user, password=ch.password
    )


def _redis(settings: Settings) -> redis.Redis:
    r = settings.redis
    return redis.Redis(host=r.host, port=r.port, db=r.db, password=r.password or None)


def test_up_is_idempotent(settings: Settings) -> None:
    before = _managed(settings)
    assert before, "DEVSTACK_SERVICES selects no service"
    t0 = time.monotonic()
    api.ensure_up(settings)
    elapsed = time.monotonic() - t0
    after = _managed(settings)
    assert {n: s.pid for n, s in after.items()} == {n: s.pid for n, s in before.items()}
    assert all(s.healthy for s in after.values()), after
    assert elapsed < 15, f"a second up took {elapsed:.1f}s"


def test_status_shows_pids_and_health(settings: Settings) -> None:
    for st in _managed(settings).values():
        assert st.healthy, st
        assert st.pid is not None and Path(f"/proc/{st.pid}").exists(), st
        assert st.rss_bytes > 0
        assert st.log_path is not None and st.log_path.exists()
    proc = subprocess.run(
        [sys.executable, "-m", "devstack", "status", "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    for name, st in _managed(settings).items():
        assert rows[name]["pid"] == st.pid
        assert rows[name]["healthy"] is True


def test_cli_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "devstack", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    for word in ("up", "down", "status", "logs", "reset", "DEVSTACK_SERVICES"):
        assert word in proc.stdout


@pytest.mark.timeout(300)
def test_down_then_up_keeps_data(scratch: Settings) -> None:
    settings = scratch
    managed = set(_managed(settings))
    tag = uuid.uuid4().hex[:10]

    # PostgreSQL: a row.
    with psycopg2.connect(settings.postgres.dsn()) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS devstack_persist (tag text PRIMARY KEY)")
        cur.execute("INSERT INTO devstack_persist VALUES (%s)", (tag,))
    conn.close()
    # ClickHouse: a row in a MergeTree table.
    ch = _ch(settings)
    ch.command("CREATE DATABASE IF NOT EXISTS devstack_persist")
    ch.command(
        "CREATE TABLE IF NOT EXISTS devstack_persist.tags (tag String) "
        "ENGINE = MergeTree ORDER BY tag"
    )
    ch.insert("devstack_persist.tags", [[tag]], column_names=["tag"])
    ch.close()
    # Redis: a key.
    r = _redis(settings)
    r.set(f"devstack_persist:{tag}", tag)
    r.close()
    # Kafka: a committed consumer-group offset.
    topic, group = f"devstack_persist_{tag}", f"devstack_persist_{tag}"
    admin = kafka_clients.admin(settings.kafka)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    producer = kafka_clients.producer(settings.kafka)
    for i in range(5):
        producer.produce(topic, value=str(i).encode())
    assert producer.flush(30) == 0
    consumer = kafka_clients.consumer(settings.kafka, group)
    consumer.subscribe([topic])
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            seen.append(msg.value() or b"")
    assert seen == [b"0", b"1"]
    consumer.commit(asynchronous=False)
    consumer.close()

    stopped = api.stop(settings)
    assert set(stopped) == managed
    for st in _managed(settings).values():
        assert st.pid is None and not st.healthy, st
    api.ensure_up(settings)
    assert all(s.healthy for s in _managed(settings).values())

    with psycopg2.connect(settings.postgres.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM devstack_persist WHERE tag = %s", (tag,))
        assert cur.fetchone() == (1,)
    conn.close()
    ch = _ch(settings)
    assert ch.command(f"SELECT count() FROM devstack_persist.tags WHERE tag = '{tag}'") == 1
    ch.close()
    r = _redis(settings)
    assert r.get(f"devstack_persist:{tag}") == tag.encode()
    r.delete(f"devstack_persist:{tag}")
    r.close()
    consumer = kafka_clients.consumer(settings.kafka, group)
    committed = consumer.committed([TopicPartition(topic, 0)], timeout=30)
    consumer.close()
    assert committed[0].offset == 2
    admin = kafka_clients.admin(settings.kafka)  # keep the handle alive for .result
    admin.delete_topics([topic])[topic].result(30)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", ["clickhouse", "redis"])
def test_stop_and_start_one_service(scratch: Settings, name: str) -> None:
    settings = scratch
    if name not in _managed(settings):
        pytest.skip(f"{name} is external (DEVSTACK_SERVICES)")
    others = {n: s.pid for n, s in _managed(settings).items() if n != name}
    assert api.stop_service(settings, name) is True
    down = _managed(settings)[name]
    assert down.pid is None and not down.healthy
    assert api.stop_service(settings, name) is False  # already stopped: no-op
    api.start_service(settings, name)
    up = _managed(settings)
    assert up[name].healthy and up[name].pid is not None
    assert {n: s.pid for n, s in up.items() if n != name} == others


def test_down_with_other_ports_leaves_the_server_and_its_pid_file_alone(
    scratch: Settings,
) -> None:
    if "redis" not in _managed(scratch):
        pytest.skip("redis is external (DEVSTACK_SERVICES)")
    pid = _managed(scratch)["redis"].pid
    assert pid is not None
    moved = dataclasses.replace(
        scratch, redis=dataclasses.replace(scratch.redis, port=_free_ports(1)[0])
    )
    assert api.stop_service(moved, "redis") is False  # not ours under these settings
    assert _managed(scratch)["redis"].pid == pid  # still running, pid file kept
    assert _redis(scratch).ping()
    assert api.stop_service(scratch, "redis") is True  # the settings used for up stop it
    api.start_service(scratch, "redis")


@pytest.mark.timeout(60)
def test_up_fails_fast_when_a_port_is_taken(tmp_path: Path) -> None:
    env = _full_scratch_env(tmp_path / "state")
    scratch = Settings.from_env(env)
    port = scratch.clickhouse.http_port
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        t0 = time.monotonic()
        with pytest.raises(api.StackError) as info:
            api.ensure_up(scratch, ["redis", "clickhouse"])
        elapsed = time.monotonic() - t0
    msg = str(info.value)
    assert "clickhouse" in msg
    assert f"port {port} is already in use by another process" in msg
    assert elapsed < 5, f"took {elapsed:.1f}s to report a taken port"
    # Fail fast means before anything was started: redis (first in order) is not running.
    assert all(s.pid is None for s in api.status(scratch))


@pytest.mark.timeout(60)
def test_cli_up_exits_nonzero_naming_service_and_port(tmp_path: Path) -> None:
    env = _full_scratch_env(tmp_path / "state")
    port = int(env["REDIS_PORT"])
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "devstack", "up", "--services", "redis"],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    assert "redis" in proc.stderr and f"port {port} is already in use" in proc.stderr
    assert elapsed < 10


@pytest.mark.timeout(120)
def test_clickhouse_locked_data_dir_fails_loudly(tmp_path: Path) -> None:
    """A second ClickHouse on the same data dir: code 76 from its log, not a hang."""
    env = _full_scratch_env(tmp_path / "state")
    scratch = Settings.from_env(env)
    data = scratch.state_dir / "clickhouse" / "data"
    data.mkdir(parents=True)
    squatter_dir = tmp_path / "squatter"
    squatter_dir.mkdir()
    # Not the ports the scratch stack will want: a squatter on them fails the start for
    # another reason (port in use) than the one this test is about.
    http_port, tcp_port = _free_ports(2, avoid={int(p) for k, p in env.items() if "PORT" in k})
    squatter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.clickhouse_server",
            "--data",
            str(data),
            "--http-port",
            str(http_port),
            "--tcp-port",
            str(tcp_port),
            "--token",
            "squatter",
        ],
        cwd=squatter_dir,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (data / "status").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        t0 = time.monotonic()
        with pytest.raises(api.StackError) as info:
            api.ensure_up(scratch, ["clickhouse"])
        elapsed = time.monotonic() - t0
    finally:
        squatter.terminate()
        try:
            squatter.wait(30)
        except subprocess.TimeoutExpired:  # a loaded machine: its shutdown is not the test
            squatter.kill()
            squatter.wait(30)
    msg = str(info.value)
    assert msg.startswith("clickhouse:")
    assert "Code: 76" in msg
    assert str(scratch.state_dir / "clickhouse" / "clickhouse.log") in msg
    assert elapsed < 20
    api.reset(scratch)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _exports(text: str) -> dict[str, str]:
    """`export NAME=value` lines as a shell would read them."""
    words = [shlex.split(line) for line in text.splitlines()]
    assert all(w[0] == "export" and len(w) == 2 for w in words), text
    return dict(w[1].split("=", 1) for w in words)


@pytest.mark.timeout(180)
def test_two_clickhouse_servers_are_two_targets_with_their_own_data(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with scratch_topology(
        state, ["clickhouse"], scratch_env(state, clickhouse_servers=2)
    ) as scratch:
        rows = {r.name: r for r in api.status(scratch.settings, options=scratch.options)}
        default, ch2 = rows["clickhouse"], rows["clickhouse-ch2"]
        assert default.healthy and ch2.healthy, (default, ch2)
        assert default.pid and ch2.pid and default.pid != ch2.pid
        assert ch2.log_path == state / "clickhouse-ch2" / "clickhouse-ch2.log"

        # `devstack env` names ch2 as a target with the interface's variable names.
        env = _exports(_cli(scratch.env, "env").stdout)
        assert env["CLICKHOUSE_TARGETS"] == "ch2"
        ports = {
            t: (int(env[f"{p}HTTP_PORT"]), int(env[f"{p}NATIVE_PORT"]))
            for t, p in (("default", "CLICKHOUSE_"), ("ch2", "CLICKHOUSE_CH2_"))
        }
        assert ports["default"] == (
            scratch.settings.clickhouse.http_port,
            scratch.settings.clickhouse.native_port,
        )
        assert ports["ch2"] == (ports["default"][0] + 1, ports["default"][1] + 1)
        assert env["CLICKHOUSE_CH2_HOST"] == "127.0.0.1" and env["CLICKHOUSE_CH2_USER"]

        # Each target is its own server: a table on ch2 is not on the default one.
        tag = uuid.uuid4().hex[:10]
        ch2_client = clickhouse_connect.get_client(
            host="127.0.0.1", port=ports["ch2"][0], username=env["CLICKHOUSE_CH2_USER"]
        )
        ch2_client.command(f"CREATE DATABASE IF NOT EXISTS only_on_ch2_{tag}")
        ch2_client.command(
            f"CREATE TABLE only_on_ch2_{tag}.t (x String) ENGINE = MergeTree ORDER BY x"
        )
        ch2_client.insert(f"only_on_ch2_{tag}.t", [[tag]], column_names=["x"])
        ch2_client.close()
        default_client = _ch(scratch.settings)
        assert default_client.command(f"EXISTS DATABASE only_on_ch2_{tag}") == 0
        default_client.close()

        # Stopping ch2 leaves the default serving; ch2 comes back with its data.
        assert api.stop_service(scratch.settings, "clickhouse-ch2", options=scratch.options)
        rows = {r.name: r for r in api.status(scratch.settings, options=scratch.options)}
        assert rows["clickhouse"].healthy and rows["clickhouse"].pid == default.pid
        assert not rows["clickhouse-ch2"].healthy and rows["clickhouse-ch2"].pid is None
        api.start_service(scratch.settings, "clickhouse-ch2", options=scratch.options)
        ch2_client = clickhouse_connect.get_client(host="127.0.0.1", port=ports["ch2"][0])
        assert ch2_client.command(f"SELECT count() FROM only_on_ch2_{tag}.t") == 1
        ch2_client.close()

        logs = _cli(scratch.env, "logs", "clickhouse-ch2", "-n", "3")
        assert logs.returncode == 0 and "clickhouse_server" in logs.stdout, logs.stderr
        unknown = _cli(scratch.env, "logs", "clickhouse-ch3")
        assert unknown.returncode == 1
        assert "unknown service 'clickhouse-ch3'" in unknown.stderr
        assert "clickhouse-ch2" in unknown.stderr  # the valid choices are listed


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("overrides", "blocked_var", "server"),
    [
        ({"DEVSTACK_CLICKHOUSE_SERVERS": "2"}, "CLICKHOUSE_CH2_HTTP_PORT", "clickhouse-ch2"),
        ({"DEVSTACK_KAFKA_BROKERS": "3"}, "KAFKA_BOOTSTRAP_SERVERS", "kafka-2"),
    ],
)
def test_up_names_the_server_whose_port_is_taken(
    tmp_path: Path, overrides: dict[str, str], blocked_var: str, server: str
) -> None:
    env = {**os.environ, **_full_scratch_env(tmp_path / "state"), **overrides}
    # Consecutive free ports, so the derived ones (+1 for ClickHouse, +2 for Kafka) are free.
    base = free_port_block(4)
    env.update(
        CLICKHOUSE_HTTP_PORT=str(base),
        CLICKHOUSE_NATIVE_PORT=str(base + 2),
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port_block(6)}",
    )
    env["KAFKA_CONTROLLER_PORT"] = str(int(env["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1]) + 1)
    options = load_options(env)
    settings = Settings.from_env(env)
    topo = api.topology(settings, options=options)
    family = server.split("-")[0]
    ports = {n.name: n.broker_port for n in topo.kafka.nodes}
    ports.update({s.name: s.http_port for s in topo.clickhouse})
    port = ports[server]
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        t0 = time.monotonic()
        proc = _cli(env, "up", "--services", family)
        elapsed = time.monotonic() - t0
    assert proc.returncode == 1
    assert f"{server}: port {port} is already in use" in proc.stderr
    assert f"move {server} with {blocked_var}" in proc.stderr
    assert elapsed < 30
    assert all(s.pid is None for s in api.status(settings, options=options))
