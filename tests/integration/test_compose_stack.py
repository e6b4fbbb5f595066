"""deploy/local/docker-compose.yml, built and run for real on a private Docker engine.

The engine runs under <state>/docker (never the machine's own Docker); the images are built
locally (tests/deploy/local_images.py: our Dockerfile, and Kafka, ClickHouse, PostgreSQL,
Redis, Prometheus and Alertmanager from the sources devstack uses) and swapped in through
the compose file's image variables. Everything below talks to the stack through its
published loopback ports only, as a user on the host would. The module's fixture removes
containers, networks and volumes and stops the engine even when a test fails; images stay
(content-hashed) so a warm run builds nothing. Timings, image sizes and the stack's memory
go to <state>/docker/compose-test-report.json.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg2
import pytest

from analytics_core import kafka_clients, registry
from analytics_core.event_contract import hash_api_key
from analytics_core.settings import Settings
from tests.conftest import ClientFixture, Kafka, ch_scalar, event, free_port, wait_for
from tests.dagster_dev_support import GraphQL
from tests.deploy.compose_stack import (
    SERVICES,
    ComposeStack,
    Ports,
    image_sizes_mib,
    write_report,
)
from tests.deploy.engine import DockerEngine, forwarding
from tests.deploy.local_images import ImageBuilder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

PROJECT = "analytics-compose-test"
BRIDGE = "ap-compose-test"  # at most 15 characters (a Linux interface name)
ROUTER_GROUP = "analytics-router"

REPORT: dict[str, Any] = {}


@pytest.fixture(scope="module")
def compose() -> Iterator[ComposeStack]:
    state = Settings.from_env().state_dir.resolve()
    engine = DockerEngine(state / "docker")
    t0 = time.monotonic()
    stack: ComposeStack | None = None
    try:
        engine.start()
        work = engine.root / "build"
        work.mkdir(parents=True, exist_ok=True)
        images = ImageBuilder(engine, work).build_all()
        t_built = time.monotonic()
        REPORT["images"] = {
            name: {"tag": b.tag, "build_s": round(b.seconds, 1), "reused": b.reused}
            for name, b in images.items()
        }
        REPORT["image_size_mib"] = {k: round(v) for k, v in image_sizes_mib(engine, images).items()}
        REPORT["build_s"] = round(t_built - t0, 1)
        ports = Ports(*(free_port() for _ in range(8)))
        stack = ComposeStack(engine, PROJECT, images, ports, BRIDGE)
        stack.down()  # a run killed before its clean-up left these behind
        with forwarding(BRIDGE):
            stack.compose("up", "-d", *SERVICES, timeout=900)
            # The daemon's own healthcheck is slow to first pass (a liveness check a minute);
            # the provisioning test waits for what the daemon does instead.
            for service in ("router", "capture", "dagster-webserver"):
                wait_for(
                    lambda s=service: stack and stack.health(s) == ["healthy"],  # type: ignore[misc]
                    timeout_s=300,
                    every_s=2,
                    what=f"{service} healthy",
                )
            REPORT["up_s"] = round(time.monotonic() - t_built, 1)
            yield stack
    finally:
        if stack is not None:
            logs = stack.compose("logs", "--no-color", "--tail", "300", check=False, timeout=120)
            (engine.root / "compose-test-logs.txt").write_text(logs)
            stack.down()
        engine.stop()
        REPORT["total_s"] = round(time.monotonic() - t0, 1)
        write_report(engine.root / "compose-test-report.json", REPORT)


@pytest.fixture(scope="module")
def published(compose: ComposeStack) -> Settings:
    return compose.settings()


def add_pending_client(settings: Settings, prefix: str) -> ClientFixture:
    client_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    key = f"key-{client_id}"
    conn = psycopg2.connect(settings.postgres.dsn())
    try:
        registry.add_client(conn, client_id, hash_api_key(key), name=f"compose {client_id}")
        conn.commit()
    finally:
        conn.close()
    return ClientFixture(client_id, key, "")


def client_database(settings: Settings, client_id: str) -> str | None:
    conn = psycopg2.connect(settings.postgres.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT ch_database_name FROM clients WHERE client_id = %s AND status = 'active'",
                (client_id,),
            )
            row = cur.fetchone()
    finally:
        conn.close()
    return row[0] if row else None


RUNS_FOR_PARTITION = """
query($client: String!) {
  runsOrError(filter: { tags: [{ key: "dagster/partition", value: $client }] }) {
    ... on Runs { results { runId status jobName tags { key value } } }
  }
}"""


@pytest.fixture(scope="module")
def active_client(compose: ComposeStack, published: Settings) -> ClientFixture:
    """A pending client, provisioned by the daemon's sensor in the stack (seen via GraphQL)."""
    client = add_pending_client(published, "compose")
    gql = GraphQL(compose.ports.dagster)

    def finished_runs() -> list[dict[str, Any]] | None:
        runs = gql(RUNS_FOR_PARTITION, client=client.client_id)["runsOrError"]["results"]
        # The provisioning; the reconciliation observe_provisioned_clients requests after it
        # is not what this fixture waits for.
        runs = [r for r in runs if r["jobName"] == "provision_client"]
        done = {"SUCCESS", "FAILURE", "CANCELED"}
        return runs if runs and all(r["status"] in done for r in runs) else None

    runs = wait_for(finished_runs, timeout_s=300, every_s=2, what="the provisioning run")
    assert isinstance(runs, list)
    assert [(r["jobName"], r["status"]) for r in runs] == [("provision_client", "SUCCESS")]
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    assert tags["dagster/sensor_name"] == "provisioning_sensor"
    database = client_database(published, client.client_id)
    assert database, "the client is not active after its provisioning run"
    return ClientFixture(client.client_id, client.api_key, database)


def test_image_runs_the_installed_package_as_a_non_root_user(compose: ComposeStack) -> None:
    probe = (
        "import json, os, importlib.metadata as md, analytics_core, router;"
        "from analytics_core import package_data as p;"
        "d = md.distribution('analytics-pipeline');"
        "print(json.dumps({'uid': os.getuid(), 'core': analytics_core.__file__,"
        " 'direct_url': d.read_text('direct_url.json'),"
        " 'schemas': sorted(f.name for f in p.clickhouse_schemas().iterdir()),"
        " 'src': os.path.exists('/src')}))"
    )
    out = compose.engine.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python",
        compose.images["app"].tag, "-c", probe,
    )  # fmt: skip
    facts = json.loads(out.strip().splitlines()[-1])
    assert facts["uid"] == 10001
    assert facts["core"].startswith("/opt/analytics/lib/python3.11/site-packages/analytics_core/")
    assert '"editable": true' not in (facts["direct_url"] or "")
    assert not facts["src"]
    assert "01_events_base.sql" in facts["schemas"]


def test_init_applied_the_metadata_schema(published: Settings) -> None:
    conn = psycopg2.connect(published.postgres.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('clients'), to_regclass('schema_versions')")
            assert cur.fetchone() == ("clients", "schema_versions")
    finally:
        conn.close()
    dagster = psycopg2.connect(published.postgres.dsn(published.postgres.dagster_dbname))
    try:
        with dagster.cursor() as cur:
            cur.execute("SELECT to_regclass('runs')")
            assert cur.fetchone() == ("runs",)
    finally:
        dagster.close()


def test_sensor_provisions_a_pending_client_with_the_packaged_sql(
    published: Settings, active_client: ClientFixture
) -> None:
    db = active_client.database
    tables = ch_scalar(
        published, "SELECT groupArray(name) FROM system.tables WHERE database = {db:String}", db=db
    )
    assert isinstance(tables, list) and "events_base" in tables
    conn = psycopg2.connect(published.postgres.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM schema_versions WHERE client_id = %s",
                (active_client.client_id,),
            )
            row = cur.fetchone()
    finally:
        conn.close()
    assert row is not None and row[0] >= 1


def count_rows(settings: Settings, database: str) -> tuple[int, int]:
    ch = settings
    total = ch_scalar(ch, f"SELECT count() FROM `{database}`.events_base")
    unique = ch_scalar(ch, f"SELECT uniqExact(event_id) FROM `{database}`.events_base")
    return int(total), int(unique)  # type: ignore[call-overload]


def capture_batch(port: int, client: ClientFixture, count: int) -> int:
    """POST a Segment batch to the capture service with the client's write key."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    batch = [
        {
            "type": "track",
            "event": "signed_up",
            "userId": f"user-{i}",
            "messageId": str(uuid.uuid4()),
            "timestamp": now,
            "properties": {"plan": "pro", "n": i},
        }
        for i in range(count)
    ]
    auth = base64.b64encode(f"{client.api_key}:".encode()).decode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/batch",
        data=json.dumps({"batch": batch}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(resp.status)


def native_batches(port: int) -> dict[str, float]:
    """capture_native_batches_total by path ("native" or "python"), from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    found = re.findall(r'^capture_native_batches_total\{path="(\w+)"\} (\S+)$', text, re.M)
    return {path: float(value) for path, value in found}


def test_events_land_and_a_malformed_one_is_dead_lettered(
    compose: ComposeStack, published: Settings, active_client: ClientFixture
) -> None:
    kafka = Kafka(published)
    kafka.send_events([event(active_client) for _ in range(500)])
    # ...and through the capture service, as an SDK would, mapped by the compiled fast path
    # the image builds (native/): the same rows as the Python mapping, several times faster.
    before = native_batches(compose.ports.capture).get("native", 0.0)
    assert capture_batch(compose.ports.capture, active_client, 50) == 200
    assert native_batches(compose.ports.capture).get("native", 0.0) == before + 1
    wait_for(
        lambda: count_rows(published, active_client.database) == (550, 550),
        timeout_s=120,
        every_s=1,
        what="550 events in the client's table",
    )

    since = kafka.end_offsets(published.kafka.dead_letter_topic)
    marker = uuid.uuid4().hex.encode()
    kafka.send([b"{not json " + marker])
    letters = kafka.read_dead_letters(
        since, lambda _dl, value: value is not None and marker in value, expect=1, timeout_s=90
    )
    assert [dl.reason.value for dl, _ in letters] == ["invalid_json"]
    REPORT["memory_mib_after_traffic"] = {
        k: round(v) for k, v in sorted(compose.memory_mib().items())
    }
    REPORT["memory_mib_total"] = round(sum(compose.memory_mib().values()))


def test_router_killed_mid_stream_and_restarted_loses_nothing(
    compose: ComposeStack, published: Settings, active_client: ClientFixture
) -> None:
    before, _ = count_rows(published, active_client.database)
    kafka = Kafka(published)
    batches = 40
    per_batch = 500
    sent = threading.Event()

    def produce() -> None:
        for _ in range(batches):
            kafka.send_events([event(active_client) for _ in range(per_batch)])
            time.sleep(0.05)
        sent.set()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    # Kill once rows are flowing: some are written, more are buffered or in flight.
    wait_for(
        lambda: count_rows(published, active_client.database)[0] > before + 2 * per_batch,
        timeout_s=120,
        every_s=0.5,
        what="rows flowing before the kill",
    )
    (router,) = compose.container_ids("router")
    compose.engine.docker("kill", "--signal", "KILL", router)
    producer.join(timeout=300)
    assert sent.is_set()
    compose.compose("start", "router")
    expected = before + batches * per_batch
    wait_for(
        lambda: count_rows(published, active_client.database)[0] >= expected,
        timeout_s=240,
        every_s=1,
        what=f"{expected} rows after the restart",
    )
    time.sleep(3)  # nothing more may arrive (a duplicate would show up now)
    assert count_rows(published, active_client.database) == (expected, expected)


def group_assignment(settings: Settings) -> dict[str, set[int]]:
    admin = kafka_clients.admin(settings.kafka)
    future = admin.describe_consumer_groups([ROUTER_GROUP])[ROUTER_GROUP]
    group = future.result(timeout=30)
    return {
        m.member_id: {tp.partition for tp in m.assignment.topic_partitions} for m in group.members
    }


def test_scaled_routers_share_the_partitions(
    compose: ComposeStack, published: Settings, active_client: ClientFixture
) -> None:
    compose.compose("up", "-d", "--no-deps", "--scale", "router=2", "router", timeout=300)
    wait_for(
        lambda: compose.health("router") == ["healthy", "healthy"],
        timeout_s=180,
        every_s=2,
        what="two healthy routers",
    )

    def shared() -> dict[str, set[int]] | None:
        members = group_assignment(published)
        parts = [p for ps in members.values() for p in ps]
        ok = len(members) == 2 and all(members.values()) and sorted(parts) == list(range(6))
        return members if ok else None

    wait_for(shared, timeout_s=120, every_s=2, what="6 partitions shared by 2 routers")
    before, _ = count_rows(published, active_client.database)
    Kafka(published).send([orjson.dumps(event(active_client)) for _ in range(600)], spread=True)
    wait_for(
        lambda: count_rows(published, active_client.database) == (before + 600, before + 600),
        timeout_s=120,
        every_s=1,
        what="events on every partition routed by the two routers",
    )


def prometheus_query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        doc = json.loads(resp.read())
    return list(doc["data"]["result"])


def rfc3339(text: str) -> float:
    """Alertmanager's timestamps (nanoseconds, Z) as Unix seconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    seconds = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC).timestamp()
    return seconds + float(f"0.{frac or 0}")


def received_alerts(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/alerts", timeout=10) as resp:
        bodies = json.loads(resp.read())
    return [alert for body in bodies for alert in body.get("alerts", [])]


def test_stopping_the_router_fires_router_down_at_the_webhook(compose: ComposeStack) -> None:
    ports = compose.ports

    # Prometheus scrapes every router replica first (so `up` is 1, not just absent).
    def scraped() -> bool:
        series = prometheus_query(ports.prometheus, 'up{job="analytics-router"}')
        return bool(series) and all(s["value"][1] == "1" for s in series)

    wait_for(scraped, timeout_s=120, every_s=2, what="Prometheus scraping the routers")
    # The kill test may have fired a RouterDown already: only one that starts now counts.
    stopped_at = time.time()
    compose.compose("stop", "router", timeout=120)

    def router_down() -> list[dict[str, Any]]:
        return [
            a
            for a in received_alerts(ports.receiver)
            if a["labels"]["alertname"] == "RouterDown"
            and a["status"] == "firing"
            and rfc3339(a["startsAt"]) >= stopped_at - 5
        ]

    alerts = wait_for(router_down, timeout_s=300, every_s=3, what="RouterDown at the webhook")
    assert isinstance(alerts, list)
    assert alerts[0]["labels"]["severity"] == "critical"
