"""Alert rules (pure), payloads, settings and sinks (the webhook against a loopback server)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from analytics_core.alerts.config import AlertSettings
from analytics_core.alerts.model import Alert, Severity, json_payload, slack_payload
from analytics_core.alerts.rules import (
    Baseline,
    ClientState,
    baseline_from_json,
    baseline_to_json,
    check_failure_alert,
    dead_letter_alert,
    dead_letter_growth,
    launch_refusal,
    run_failure_alert,
    stuck_clients,
)
from analytics_core.alerts.sinks import (
    Delivered,
    NotDelivered,
    StdoutSink,
    WebhookSink,
    deliver,
    sinks_from_settings,
)
from analytics_core.settings import SettingsError
from analytics_pipeline.sensor_cursor import decode as decode_cursor
from analytics_pipeline.sensor_cursor import encode as encode_cursor

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)


def test_stuck_clients_alert_once_per_episode() -> None:
    old = NOW - timedelta(minutes=45)
    clients = [
        ClientState("a", "pending", old),
        ClientState("b", "failed", old, "ClickHouse: refused"),
        ClientState("c", "pending", NOW - timedelta(minutes=5)),
        ClientState("d", "active", old),
    ]
    alerts, state = stuck_clients(clients, now=NOW, minutes=30, alerted={})
    assert [a.fields["client_id"] for a in alerts] == ["a", "b"]
    assert alerts[1].severity is Severity.CRITICAL and "refused" in alerts[1].text
    again, state2 = stuck_clients(clients, now=NOW, minutes=30, alerted=state)
    assert again == [] and state2 == state
    # b recovers, then fails again later: a new episode is alerted.
    later = NOW + timedelta(hours=2)
    clients2 = [ClientState("b", "failed", NOW + timedelta(minutes=10))]
    alerts3, state3 = stuck_clients(clients2, now=later, minutes=30, alerted=state2)
    assert [a.fields["client_id"] for a in alerts3] == ["b"] and set(state3) == {"b"}


def test_dead_letter_growth_baseline_window_and_threshold() -> None:
    first = dead_letter_growth(None, {0: 10, 1: 5}, now=NOW, threshold=3, window_minutes=60)
    assert not first.alert and first.baseline.offsets == {0: 10, 1: 5}
    base = first.baseline
    small = dead_letter_growth(
        base, {0: 11, 1: 5}, now=NOW + timedelta(minutes=1), threshold=3, window_minutes=60
    )
    assert not small.alert and small.new_letters == 1 and small.baseline is base
    big = dead_letter_growth(
        base, {0: 12, 1: 6, 2: 1}, now=NOW + timedelta(minutes=2), threshold=3, window_minutes=60
    )
    assert big.alert and big.new_letters == 4 and big.baseline.offsets[2] == 1
    alert = dead_letter_alert(
        big,
        topic="dl",
        threshold=3,
        by_reason={"invalid_json": 4},
        by_client={"": 3, "acme": 1},
        sampled=4,
    )
    assert "4 new dead letter(s) on dl in 2 min" in alert.text and "invalid_json 4" in alert.text
    expired = dead_letter_growth(
        base, {0: 11, 1: 5}, now=NOW + timedelta(minutes=61), threshold=3, window_minutes=60
    )
    assert not expired.alert and expired.baseline.offsets == {0: 11, 1: 5}


def test_cursor_round_trip_and_garbage() -> None:
    b = Baseline({0: 3}, NOW)
    doc = decode_cursor(encode_cursor({"baseline": baseline_to_json(b)}))
    assert baseline_from_json(doc["baseline"]) == b
    assert decode_cursor("not json") == {} and decode_cursor(None) == {}
    assert decode_cursor(json.dumps({"v": 99})) == {}
    assert baseline_from_json({"offsets": "x"}) is None


def test_a_refused_run_is_a_warning_not_a_critical_alert() -> None:
    refused = run_failure_alert(
        job_name="deprovision_client", run_id="r1", message="confirmation typo", refused=True
    )
    assert (refused.kind, refused.severity) == ("run_refused", Severity.WARNING)
    assert refused.title == "Dagster run refused: deprovision_client"
    failed = run_failure_alert(job_name="deprovision_client", run_id="r2", message="boom")
    assert (failed.kind, failed.severity) == ("run_failure", Severity.CRITICAL)


def test_run_and_check_alerts_and_payloads() -> None:
    alert = run_failure_alert(
        job_name="provision_client",
        run_id="r1",
        message="boom",
        partition="acme",
        client_id="acme",
        dagster_url="http://d:3000",
    )
    assert alert.title == "Dagster run failed: provision_client for acme"
    assert alert.link == "http://d:3000/runs/r1"
    body = json_payload(alert)
    assert body["kind"] == "run_failure" and body["fields"]["run_id"] == "r1"
    slack = slack_payload(alert)
    assert set(slack) == {"text"} and "provision_client" in slack["text"]
    check = check_failure_alert(
        asset_key="client_events",
        check_name="reconciliation",
        severity="WARN",
        description="3 missing",
        run_id="r2",
        partition="acme",
        storage_id=7,
    )
    assert check.severity is Severity.WARNING and check.dedupe_key == "asset_check:7"


def test_settings_from_env() -> None:
    s = AlertSettings.from_env(
        {
            "ALERT_WEBHOOK_URL": "http://127.0.0.1:9/x",
            "ALERT_WEBHOOK_FORMAT": "SLACK",
            "ALERT_SINKS": "log,stdout",
        }
    )
    assert s.webhook_format == "slack" and s.sinks == ("log", "stdout")
    assert [k.name for k in sinks_from_settings(s)] == ["log", "stdout", "webhook"]
    assert "9/x" not in repr(s)
    for bad in (
        {"ALERT_WEBHOOK_FORMAT": "xml"},
        {"ALERT_SINKS": "pager"},
        {"ALERT_WEBHOOK_URL": "ftp://x"},
        {"ALERT_DEAD_LETTER_THRESHOLD": "0"},
    ):
        with pytest.raises(SettingsError):
            AlertSettings.from_env(bad)


class _Hook:
    def __init__(self, status: int) -> None:
        self.status = status
        self.bodies: list[dict[str, object]] = []


@pytest.fixture
def hook() -> Iterator[tuple[str, _Hook]]:
    state = _Hook(200)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers["Content-Length"])
            state.bodies.append(json.loads(self.rfile.read(n)))
            self.send_response(state.status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", state
    server.shutdown()
    server.server_close()


def sample() -> Alert:
    return Alert("run_failure", Severity.CRITICAL, "t", "x", "k", {"a": 1})


def test_webhook_json_and_slack_and_refusal(hook: tuple[str, _Hook]) -> None:
    url, state = hook
    assert WebhookSink(url, "json").send(sample()) == Delivered("webhook")
    assert WebhookSink(url, "slack").send(sample()) == Delivered("webhook")
    assert state.bodies[0]["kind"] == "run_failure" and set(state.bodies[1]) == {"text"}
    state.status = 500
    result = WebhookSink(url).send(sample())
    assert isinstance(result, NotDelivered) and "HTTP 500" in result.reason


def test_unreachable_webhook_and_broken_sink_do_not_stop_others() -> None:
    class Broken:
        name = "broken"

        def send(self, alert: Alert) -> Delivered:
            raise RuntimeError("nope")

    out = io.StringIO()
    (outcome,) = deliver(
        [sample()], [Broken(), WebhookSink("http://127.0.0.1:1/x", timeout_s=1), StdoutSink(out)]
    )
    assert [type(r).__name__ for r in outcome.results] == [
        "NotDelivered",
        "NotDelivered",
        "Delivered",
    ]
    assert json.loads(out.getvalue())["dedupe_key"] == "k"


def test_dagster_partition_errors_at_launch_are_refusals_that_say_what_to_do() -> None:
    """A per-client run launched without a partition, or for a client whose partition is
    gone (a queued observation after a deprovisioning), fails in Dagster before any of its
    code runs: a warning that says so, not a critical alert with Dagster's invariant."""
    # The texts Dagster 1.13 fails such steps with.
    none = (
        "dagster._core.errors.DagsterInvariantViolationError: Cannot access partition_key for "
        "a non-partitioned run\\n"
    )
    gone = (
        "dagster._core.errors.DagsterInvalidInvocationError: Partition range probe-1 to "
        "probe-1 is not a valid range. Nonexistent partition keys: ['probe-1']\\n"
    )
    assert "launched without a client" in (launch_refusal(none, None) or "")
    why = launch_refusal(gone, "probe-1") or ""
    assert "no client partition 'probe-1'" in why and "nothing was done" in why
    assert launch_refusal("ClickHouse is down", "probe-1") is None
