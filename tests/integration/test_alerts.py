"""Alerting sensors on the real stack, evaluated as the sensor daemon does (sandboxed
registry and Dagster instance), delivering to a webhook server on 127.0.0.1 in the test."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic
from dagster import Definitions, ExecuteInProcessResult

from analytics_core import kafka_clients, lifecycle
from analytics_core.clients import ClientStatus
from analytics_core.settings import Settings
from analytics_pipeline.definitions import make_definitions
from analytics_pipeline.defs.alerts.resources import AlertsResource
from analytics_pipeline.defs.reconciliation.jobs import reconcile_tags
from analytics_pipeline.resources import ClickHouseResource, KafkaResource
from devstack import api
from tests.dagster_sandbox import Sandbox, sandbox, tick

pytestmark = pytest.mark.integration


class Hook:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 200
        self.lock = threading.Lock()
        self.url = ""

    def alerts(self, **settings: Any) -> AlertsResource:
        """The `alerts` resource delivering JSON to this webhook."""
        return AlertsResource(webhook_url=self.url, webhook_format="json", **settings)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for b in self.bodies if b.get("kind") == kind]


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.bodies.append(body)
            self.send_response(state.status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/a"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    api.ensure_up(Settings.from_env())
    with sandbox(tmp_path / "dagster_home", prefix="t5") as box:
        yield box


def definitions(**resources: Any) -> Definitions:
    """The code location, with some resources replaced."""
    return make_definitions(resources or None)


def trace_run(defs: Definitions, sb: Sandbox, event_id: str) -> ExecuteInProcessResult:
    return defs.resolve_job_def("trace_event").execute_in_process(
        instance=sb.instance,
        run_config={"ops": {"trace_event_op": {"config": {"event_id": event_id}}}},
        raise_on_error=False,
    )


def test_failed_run_alert_reaches_the_webhook_once(sb: Sandbox, hook: Hook) -> None:
    """A run that fails (ClickHouse unreachable) is a critical alert; a run that refused what
    it was asked (a malformed event id) is a warning that says what was refused."""
    defs = sb.definitions(alerts=hook.alerts())
    broken = sb.definitions(
        alerts=hook.alerts(), clickhouse=ClickHouseResource(host="127.0.0.1", http_port=9)
    )
    first = tick(sb, defs, "alert_on_run_failure", None)  # the sensor starts: sets its cursor
    refused = trace_run(defs, sb, "not-an-id")
    failed = trace_run(broken, sb, str(uuid.uuid4()))
    # A per-client job launched without its client (the API allows it): a warning. (In
    # process our step refuses; launched by the daemon, Dagster fails the step as it starts,
    # which tests/unit/test_alert_step_failures.py covers.)
    no_client = defs.resolve_job_def("reconcile_client").execute_in_process(
        instance=sb.instance, raise_on_error=False
    )
    assert not refused.success and not failed.success and not no_client.success
    cursor = first.cursor
    for _ in range(5):  # a tick may handle one failed run at a time
        cursor = tick(sb, defs, "alert_on_run_failure", cursor).cursor
        if hook.of_kind("run_failure") and len(hook.of_kind("run_refused")) == 2:
            break
    (alert,) = hook.of_kind("run_failure")
    assert alert["severity"] == "critical"
    assert alert["fields"]["job"] == "trace_event"
    assert alert["fields"]["run_id"] == failed.run_id
    assert alert["title"] == "Dagster run failed: trace_event"
    launch, refusal = sorted(hook.of_kind("run_refused"), key=lambda a: a["fields"]["job"])
    assert launch["severity"] == "warning" and launch["fields"]["run_id"] == no_client.run_id
    assert "reconciliation needs a client" in launch["text"]
    assert refusal["severity"] == "warning"
    assert refusal["fields"]["run_id"] == refused.run_id
    assert "is not an event id" in refusal["text"]
    assert refusal["title"] == "Dagster run refused: trace_event"
    tick(sb, defs, "alert_on_run_failure", cursor)
    assert len(hook.of_kind("run_failure")) == 1, "a failed run is alerted once"
    assert len(hook.of_kind("run_refused")) == 2, "a refused run is alerted once"


def test_failed_asset_check_and_stuck_client_alerts(sb: Sandbox, hook: Hook) -> None:
    # No accounting database: the reconciliation can not prove anything -> a WARN failure.
    ops_missing = f"ops_missing_{uuid.uuid4().hex[:8]}"
    defs = sb.definitions(
        alerts=hook.alerts(stuck_client_minutes=30),
        clickhouse=ClickHouseResource(ops_database=ops_missing),
    )
    client_id = f"t5-{uuid.uuid4().hex[:8]}"
    sb.add_client(client_id, "key")
    with sb.connections() as c:
        assert isinstance(lifecycle.provision(c, client_id), lifecycle.Provisioned)
    start = tick(sb, defs, "alert_on_failed_asset_checks", None)
    sb.instance.add_dynamic_partitions("clients", [client_id])
    result = defs.resolve_job_def("reconcile_client").execute_in_process(
        instance=sb.instance, tags=reconcile_tags(client_id), raise_on_error=False
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    hook.status = 503  # the webhook is down: the alert is retried on the next tick
    down = tick(sb, defs, "alert_on_failed_asset_checks", start.cursor)
    assert down.skip_message and "retried next tick" in down.skip_message
    hook.status = 200
    up = tick(sb, defs, "alert_on_failed_asset_checks", down.cursor)
    assert up.skip_message == "sent 1 alert(s) for failed asset checks"  # the tick's text
    alerts = hook.of_kind("asset_check_failed")
    assert len(alerts) == 2 and alerts[0] == {**alerts[1], "at": alerts[0]["at"]}
    alert = alerts[-1]
    assert alert["severity"] == "warning" and alert["fields"]["partition"] == client_id
    assert "router_consumption does not exist" in alert["text"]
    tick(sb, defs, "alert_on_failed_asset_checks", up.cursor)
    assert len(hook.of_kind("asset_check_failed")) == 2

    # A client pending for an hour.
    stuck = f"t5-{uuid.uuid4().hex[:8]}"
    sb.add_client(stuck, "key", ClientStatus.PENDING)
    with sb.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE clients SET updated_at = now() - interval '1 hour' WHERE client_id = %s",
            (stuck,),
        )
        conn.commit()
    t1 = tick(sb, defs, "alert_on_stuck_clients", None)
    assert t1.skip_message == "sent 1 alert(s) for stuck clients"
    (alert,) = hook.of_kind("client_stuck")
    assert alert["fields"]["client_id"] == stuck and alert["fields"]["status"] == "pending"
    tick(sb, defs, "alert_on_stuck_clients", t1.cursor)
    assert len(hook.of_kind("client_stuck")) == 1, "a stuck client is alerted once"


def test_dead_letter_growth_alert_with_reasons(sb: Sandbox, hook: Hook) -> None:
    settings = Settings.from_env()
    topic = f"t5_dead_{uuid.uuid4().hex[:8]}"
    admin = kafka_clients.admin(settings.kafka)
    for f in admin.create_topics([NewTopic(topic, num_partitions=2)]).values():
        f.result(30)
    try:
        defs = sb.definitions(
            alerts=hook.alerts(dead_letter_threshold=5),
            kafka=KafkaResource(dead_letter_topic=topic),
        )
        base = tick(sb, defs, "alert_on_dead_letter_growth", None)
        producer = kafka_clients.producer(settings.kafka)

        def letters(n: int, reason: str, client: str) -> None:
            for _ in range(n):
                headers = [("dl-reason", reason.encode()), ("dl-client-id", client.encode())]
                producer.produce(topic, value=b"{}", headers=headers)
            assert producer.flush(30) == 0

        letters(3, "schema_violation", "acme")
        quiet = tick(sb, defs, "alert_on_dead_letter_growth", base.cursor)
        assert quiet.skip_message and "3 new dead letter(s)" in quiet.skip_message
        assert hook.of_kind("dead_letter_growth") == []
        letters(4, "invalid_json", "")
        sent = tick(sb, defs, "alert_on_dead_letter_growth", quiet.cursor)
        assert sent.skip_message == "sent an alert: 7 new dead letter(s)"
        (alert,) = hook.of_kind("dead_letter_growth")
        assert alert["fields"]["new_dead_letters"] == 7
        assert "invalid_json 4" in alert["text"] and "schema_violation 3" in alert["text"]
        assert "acme 3" in alert["text"]
    finally:
        for f in admin.delete_topics([topic]).values():
            f.result(30)
