"""Reconciliation on the real stack: the real router writes its accounting, the check
compares it with the client's rows and dead letters.

Each test routes through its own router consumer group (RECONCILIATION_CONSUMER_GROUPS-like
`groups=`), so accounting of other tests on the shared stack does not interfere.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from dagster import DagsterInstance

from analytics_core.clickhouse import http_client
from analytics_core.connections import open_connections
from analytics_core.reconciliation.model import ProblemKind, Report, window_label
from analytics_core.reconciliation.render import text
from analytics_core.reconciliation.run import ReconciliationOptions, reconcile_client
from analytics_core.settings import Settings
from analytics_pipeline.defs.reconciliation.jobs import reconcile_tags
from analytics_pipeline.defs.reconciliation.resources import ReconciliationResource
from tests.conftest import ClientFixture, Kafka, RouterThread, event, wait_for
from tests.integration.test_alerts import definitions

pytestmark = pytest.mark.integration


def rows(settings: Settings, database: str) -> int:
    ch = http_client(settings.clickhouse)
    try:
        return int(ch.query(f"SELECT count() FROM `{database}`.events FINAL").result_rows[0][0])
    finally:
        ch.close()


def route_mixed_traffic(
    stack: Settings, client: ClientFixture, kafka: Kafka, router: RouterThread
) -> dict[str, Any]:
    """30 good events, 3 with a wrong key, 2 breaking the contract, 1 batch of 4 good."""
    good = [event(client) for _ in range(30)]
    batch = [event(client) for _ in range(4)]
    bad_key = [event(client, api_key="wrong") for _ in range(3)]
    broken = [event(client, timestamp="yesterday") for _ in range(2)]
    kafka.send_events(good + bad_key + broken)
    kafka.send([orjson.dumps(batch)])
    wait_for(lambda: rows(stack, client.database) >= 34, 60, what="34 rows")
    # Stop the router: it flushes, writes its last accounting ranges and commits.
    router.stop()
    return {"good": good + batch, "dead": bad_key + broken}


def reconcile(stack: Settings, client_id: str, group: str) -> Report:
    with open_connections(stack) as c:
        report = reconcile_client(
            c, client_id, ReconciliationOptions(grace_s=0, lookback_hours=3, groups=(group,))
        )
    assert isinstance(report, Report), report
    return report


def test_balanced_after_a_normal_run(
    stack: Settings, make_client: Any, kafka: Kafka, start_router: Any
) -> None:
    client = make_client("rec")
    router = start_router()
    route_mixed_traffic(stack, client, kafka, router)
    started = time.monotonic()
    report = reconcile(stack, client.client_id, router.settings.group_id)
    elapsed = time.monotonic() - started
    assert report.passed, report.problems
    judged = report.judged_windows
    assert sum(w.routed_accounted for w in judged) == 34
    assert sum(w.rows_found for w in judged) == 34
    assert sum(w.dead_lettered_accounted for w in judged) == 5
    assert sum(w.letters_found for w in judged) == 5
    reasons: dict[str, int] = {}
    for w in judged:
        for r, n in w.dead_lettered_by_reason.items():
            reasons[r] = reasons.get(r, 0) + n
    assert reasons == {"invalid_api_key": 3, "schema_violation": 2}
    assert not [g for g in report.gaps if g.relevant]
    assert elapsed < 30, f"reconciliation took {elapsed:.1f}s"


def test_rows_deleted_behind_the_pipelines_back_fail_the_check(
    stack: Settings,
    make_client: Any,
    kafka: Kafka,
    start_router: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_client("recdel")
    router = start_router()
    sent = route_mixed_traffic(stack, client, kafka, router)
    assert reconcile(stack, client.client_id, router.settings.group_id).passed
    victims = [str(e["event_id"]) for e in sent["good"][:3]]
    ch = http_client(stack.clickhouse)
    try:
        ch.command(
            f"DELETE FROM `{client.database}`.events_base WHERE event_id IN {{ids:Array(UUID)}}",
            parameters={"ids": victims},
        )
    finally:
        ch.close()
    assert rows(stack, client.database) == 31

    report = reconcile(stack, client.client_id, router.settings.group_id)
    assert not report.passed
    (problem,) = report.problems
    assert problem.kind is ProblemKind.MISSING_ROWS and problem.count == 3
    assert problem.client_id == client.client_id
    label = window_label(problem.window or 0)
    assert f"client {client.client_id}, window {label}: 3 routed event(s) missing" in (
        problem.message
    )

    # The same through Dagster: the partitioned asset check fails and says so in metadata.
    defs = definitions(
        reconciliation=ReconciliationResource(
            grace_s=0, lookback_hours=3, groups=[router.settings.group_id]
        )
    )
    with DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("clients", [client.client_id])
        result = defs.resolve_job_def("reconcile_client").execute_in_process(
            instance=instance, tags=reconcile_tags(client.client_id), raise_on_error=False
        )
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.partition == client.client_id
    assert evaluation.metadata["missing"].value == 3
    # The same run observed the client's events table (Dagster's standard table metadata).
    [observed] = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    observation = observed.event_specific_data.asset_observation  # type: ignore[union-attr]
    assert observation.partition == client.client_id
    assert observation.metadata["dagster/table_name"].value == f"{client.database}.events_base"
    assert "dagster/row_count" in observation.metadata
    assert label in str(evaluation.metadata["failed_windows"].value)
    assert "3 routed event(s) missing" in (evaluation.description or "")


def test_cli_reports_json_and_exit_status(
    stack: Settings, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib
    import io

    from analytics_core.reconciliation.__main__ import main

    client = make_client("reccli")  # provisioned, no traffic: nothing to reconcile
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--client", client.client_id, "--json", "--grace-s", "0"]) == 0
    doc = orjson.loads(out.getvalue())
    assert doc["passed"] is True and doc["totals"]["consumed"] == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--client", f"nobody-{uuid.uuid4().hex[:6]}"]) == 2
    assert "not reconciled" in out.getvalue()


def raw_rows(settings: Settings, database: str) -> int:
    """Stored copies, without FINAL (producer duplicates count until a merge removes them)."""
    ch = http_client(settings.clickhouse)
    try:
        return int(ch.query(f"SELECT count() FROM `{database}`.events_base").result_rows[0][0])
    finally:
        ch.close()


def test_producer_duplicates_are_reported_not_missing_before_and_after_a_merge(
    stack: Settings, make_client: Any, kafka: Kafka, start_router: Any
) -> None:
    """A producer retry: the same 2 events (same event ids) sent again as separate messages.
    The router accounts 7 routed copies; the table holds 7 rows until a merge keeps 5."""
    client = make_client("recdup")
    router = start_router()
    sent = [event(client) for _ in range(5)]
    kafka.send_events(sent)
    wait_for(lambda: raw_rows(stack, client.database) >= 5, 60, what="5 rows")
    kafka.send_events(sent[:2])  # the retry: two more Kafka messages, same bytes
    wait_for(lambda: raw_rows(stack, client.database) >= 7, 60, what="7 stored copies")
    router.stop()
    group = router.settings.group_id
    assert rows(stack, client.database) == 5  # FINAL hides the duplicates

    before = reconcile(stack, client.client_id, group)
    assert before.passed, before.problems
    totals = before.totals()
    assert (totals["routed"], totals["rows_found"], totals["missing"]) == (7, 7, 0)
    assert (totals["duplicates_stored"], totals["duplicates_collapsed"]) == (2, 0)

    ch = http_client(stack.clickhouse)
    try:
        ch.command(f"OPTIMIZE TABLE `{client.database}`.events_base FINAL")
        assert raw_rows(stack, client.database) == 5  # the merge removed the 2 copies

        after = reconcile(stack, client.client_id, group)
        assert after.passed, after.problems
        totals = after.totals()
        assert (totals["routed"], totals["rows_found"], totals["missing"]) == (7, 5, 0)
        assert (totals["duplicates_stored"], totals["duplicates_collapsed"]) == (0, 2)
        assert "duplicates collapsed: 2" in text(after)

        # Collapsed duplicates never hide a loss: an event deleted after the merge is missing.
        ch.command(
            f"DELETE FROM `{client.database}`.events_base WHERE event_id = {{id:UUID}}",
            parameters={"id": str(sent[4]["event_id"])},
        )
    finally:
        ch.close()
    lost = reconcile(stack, client.client_id, group)
    (problem,) = lost.problems
    assert problem.kind is ProblemKind.MISSING_ROWS and problem.count == 1
    assert "+ 2 duplicate(s) collapsed by merges" in problem.message
