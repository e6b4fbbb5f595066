"""The Dagster side of reconciliation: check results, run tags, the hourly schedule."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from dagster import AssetCheckSeverity, DagsterInstance, build_schedule_context

from analytics_core.reconciliation.model import (
    AccountedCount,
    Observations,
    OffsetSpan,
    RowGroup,
    ScanSummary,
    Stream,
    Unavailable,
)
from analytics_core.reconciliation.reconcile import reconcile
from analytics_pipeline.defs.reconciliation.assets import check_result
from analytics_pipeline.defs.reconciliation.jobs import reconcile_tags
from analytics_pipeline.defs.reconciliation.schedules import reconciliation_schedule

W = 1_795_788_000
NOW = datetime.fromtimestamp(W + 1800, UTC)


def report(found: int):  # type: ignore[no-untyped-def]
    s = Stream("g", "raw", 0)
    obs = Observations(
        islands=(OffsetSpan(s, 0, 10),),
        client_spans=(OffsetSpan(s, 0, 10),),
        rows=(RowGroup("raw", 0, "g", True, 10, W, found, 0, 9),),
        dead_ranges=(),
        letters=(),
        letter_scan=ScanSummary(True, 0, ""),
    )
    accounted = [AccountedCount("g", "raw", W, "routed", "", 10, NOW)]
    return reconcile("acme", "client_acme", accounted, obs, now=NOW, horizon=W, grace_s=0)


def test_check_result_passes_and_fails_with_numbers() -> None:
    ok = check_result(report(10))
    assert ok.passed and ok.metadata["consumed"].value == 10
    bad = check_result(report(6))
    assert not bad.passed and bad.severity is AssetCheckSeverity.ERROR
    assert bad.metadata["missing"].value == 4
    assert bad.metadata["failed_windows"].value == "2026-11-27T14:00Z"
    assert "4 routed event(s) missing" in (bad.description or "")
    assert "| 2026-11-27T14:00Z | yes | 10 | 10 | 6 |" in bad.metadata["windows"].value


def test_unavailable_is_a_warning_only_without_accounting() -> None:
    none = check_result(Unavailable("acme", "no table", "no_accounting"))
    assert not none.passed and none.severity is AssetCheckSeverity.WARN
    pending = check_result(Unavailable("acme", "client acme has no database", "no_database"))
    assert pending.passed


def test_schedule_requests_one_tagged_run_per_client(tmp_path: Path) -> None:
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        context = build_schedule_context(instance=instance, scheduled_execution_time=NOW)
        assert [type(r).__name__ for r in reconciliation_schedule(context)] == ["SkipReason"]
        instance.add_dynamic_partitions("clients", ["b", "a"])
        requests = list(reconciliation_schedule(context))
    assert [r.tags["dagster/partition"] for r in requests] == ["a", "b"]
    # The sweep only fills idle slots: below the UI's launches (0) and new clients' runs.
    assert {r.tags["dagster/priority"] for r in requests} == {"-10"}
    assert requests[0].run_key == "reconcile:a:20261127T1430"
    assert reconcile_tags("a")["analytics/client_id"] == "a"
