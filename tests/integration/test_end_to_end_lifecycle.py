"""A client from pending to deprovisioned, with the real router (`python -m router`) routing it.

pending in PostgreSQL -> provisioning sensor -> provisioning run -> the router routes the
client's events into its new database -> a new migration file -> migrations sensor ->
migration run (v001's materialized page_url reaches new rows) -> deprovisioning run -> the
router dead-letters the client's later events as client_inactive.

Isolation on the shared stack: a sandbox registry and Dagster storage
(tests/dagster_sandbox.py), and this test's own raw and dead-letter topics, so the router
sees only its events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError

from analytics_core import kafka_clients, package_data
from analytics_core.clickhouse import database_exists, http_client
from analytics_core.clients import ClientStatus
from analytics_core.dead_letter import read_dead_letter
from analytics_core.reasons import Reason
from analytics_core.settings import REPO_ROOT, Settings
from devstack import api
from router.send_events import valid_event
from tests.dagster_sandbox import Sandbox, launch, private_topics, sandbox, tick

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def stack() -> None:
    api.ensure_up(Settings.from_env())


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path / "dagster_home") as box:
        yield box


@pytest.fixture
def topics(sb: Sandbox) -> Iterator[tuple[str, str]]:
    with private_topics(sb.settings, "t3_e2e", raw_partitions=3) as names:
        yield names


@pytest.fixture
def router(sb: Sandbox, topics: tuple[str, str], tmp_path: Path) -> Iterator[subprocess.Popen]:
    raw, dead = topics
    env = {
        **os.environ,
        **sb.env(),
        "KAFKA_RAW_TOPIC": raw,
        "KAFKA_DEAD_LETTER_TOPIC": dead,
        "ROUTER_GROUP_ID": f"t3-e2e-{uuid.uuid4().hex[:8]}",
        "ROUTER_INSTANCE_ID": "t3-e2e",
        "ROUTER_METRICS_PORT": "0",
        "ROUTER_FLUSH_INTERVAL_MS": "200",
    }
    log = (tmp_path / "router.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "router"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    log.close()


def wait_for(predicate: Callable[[], object], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def scalar(sb: Sandbox, query: str) -> object:
    ch = http_client(sb.settings.clickhouse)
    try:
        return ch.query(query).result_rows[0][0]
    finally:
        ch.close()


def send(sb: Sandbox, topic: str, client_id: str, api_key: str, first: int, n: int) -> list[str]:
    """Send n valid events numbered first.. (url /page/<i % 50>); returns their event ids."""
    producer = kafka_clients.producer(sb.settings.kafka)
    ids = []
    for i in range(first, first + n):
        event = valid_event(client_id, api_key, i)
        ids.append(str(event["event_id"]))
        producer.produce(topic, orjson.dumps(event), key=client_id.encode())
    assert producer.flush(30) == 0
    return ids


def dead_letters(sb: Sandbox, topic: str, event_ids: set[str]) -> dict[str, str]:
    """event id -> dead-letter reason, for the given events (waits until all are there)."""
    consumer = kafka_clients.consumer(sb.settings.kafka, f"t3-e2e-reader-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    found: dict[str, str] = {}
    deadline = time.monotonic() + 60
    try:
        while set(found) < event_ids and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                continue
            letter = read_dead_letter(msg.headers())  # type: ignore[arg-type]
            if letter.event_id in event_ids:
                found[letter.event_id] = letter.reason.value
                assert letter.client_id is not None
    finally:
        consumer.close()
    assert set(found) == event_ids, f"dead letters missing for {event_ids - set(found)}"
    return found


def test_client_from_pending_to_deprovisioned_through_the_router(
    sb: Sandbox, topics: tuple[str, str], router: subprocess.Popen, tmp_path: Path
) -> None:
    raw, dead = topics
    migrations = tmp_path / "migrations"
    migrations.mkdir()  # base schema only, for now
    defs = sb.definitions(migrations)
    client_id, api_key = f"t3-{uuid.uuid4().hex[:8]}", "e2e-key"
    database = "client_" + client_id.replace("-", "_")
    sb.add_client(client_id, api_key)

    # Pending: the router dead-letters the client's events (and caches its status).
    early = send(sb, raw, client_id, api_key, 0, 1)
    assert dead_letters(sb, dead, set(early)) == {early[0]: Reason.CLIENT_INACTIVE.value}

    # Sensor -> provisioning run -> active; the cache invalidation lets events flow at once.
    [request] = tick(sb, defs, "provisioning_sensor", None).run_requests
    provisioned = launch(sb, defs, "provisioning_sensor", request)
    assert provisioned is not None and provisioned.success
    assert sb.client(client_id).status == ClientStatus.ACTIVE
    send(sb, raw, client_id, api_key, 1, 5)
    wait_for(
        lambda: scalar(sb, f"SELECT count() FROM {database}.events_base FINAL") == 5,
        "5 routed events",
    )
    assert (
        scalar(
            sb,
            f"SELECT count() FROM system.columns WHERE database = '{database}'"
            " AND table = 'events_base' AND name = 'page_url'",
        )
        == 0
    )

    # A new migration file -> migrations sensor -> migration run; new rows get page_url.
    v001 = package_data.clickhouse_migrations() / "v001_page_url_column.sql"
    (migrations / v001.name).write_bytes(v001.read_bytes())
    [request] = tick(sb, defs, "migrations_sensor", None).run_requests
    migrated = launch(sb, defs, "migrations_sensor", request)
    assert migrated is not None and migrated.success
    send(sb, raw, client_id, api_key, 101, 5)  # urls /page/1 .. /page/5
    wait_for(
        lambda: scalar(sb, f"SELECT count() FROM {database}.events_base FINAL") == 10,
        "10 routed events",
    )
    urls = scalar(
        sb,
        f"SELECT groupArray(page_url) FROM (SELECT page_url FROM {database}.events_base FINAL"
        " WHERE JSONExtractInt(event_properties, 'n') > 100 ORDER BY page_url)",
    )
    assert urls == [f"/page/{i}" for i in range(1, 6)]

    # Deprovisioning drops the database; later events are dead-lettered as client_inactive.
    config = {"client_id": client_id, "confirm": client_id, "requested_by": "e2e"}
    dropped = defs.resolve_job_def("deprovision_client").execute_in_process(
        instance=sb.instance, run_config={"ops": {"deprovision": {"config": config}}}
    )
    assert dropped.success
    assert sb.client(client_id).status == ClientStatus.DEPROVISIONED
    ch = http_client(sb.settings.clickhouse)
    assert not database_exists(ch, database)
    ch.close()
    late = send(sb, raw, client_id, api_key, 200, 3)
    reasons = dead_letters(sb, dead, set(late))
    assert set(reasons.values()) == {Reason.CLIENT_INACTIVE.value}
    assert router.poll() is None, "the router exited"
