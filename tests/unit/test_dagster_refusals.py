"""Dagster runs that can not do what they were asked end as refusals, before any connection.

Every resource points at a closed port, so a test fails if a step tries to connect. A
refusal is a step failure whose metadata says `refused: true` (a warning alert, never
retried) and whose description says what was wrong; a run for a client whose partition was
removed after it was queued records nothing and, for batch loads, succeeds.
"""

from __future__ import annotations

from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance, ExecuteInProcessResult

from analytics_core.trace.model import TraceReport
from analytics_pipeline.definitions import make_definitions
from analytics_pipeline.defs.client_lifecycle.partition_plan import plan_partitions, tick_summary
from analytics_pipeline.defs.trace.jobs import _dagster_text
from analytics_pipeline.tags import PARTITION_TAG
from tests.closed_resources import CLOSED_RESOURCES


@pytest.fixture(scope="module")
def defs() -> Any:
    return make_definitions(CLOSED_RESOURCES)


def run(
    defs: Any,
    job: str,
    config: dict[str, Any] | None = None,
    *,
    partition: str | None = None,
    partition_exists: bool = True,
) -> ExecuteInProcessResult:
    """Execute `job`; `partition` is set as the tag Dagster puts on a partitioned run, which
    stays on a queued run after its partition is deleted (`partition_exists=False`)."""
    instance = DagsterInstance.ephemeral()
    if partition is not None and partition_exists:
        instance.add_dynamic_partitions("clients", [partition])
    result: ExecuteInProcessResult = defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        run_config=config,
        tags={PARTITION_TAG: partition} if partition is not None else None,
        raise_on_error=False,
    )
    return result


def refusal_of(result: ExecuteInProcessResult) -> str:
    """The description of the run's one failed step, which must be a refusal, not retried."""
    assert not result.success
    assert not [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    [failure] = [e for e in result.all_events if e.is_step_failure]
    data = failure.step_failure_data
    assert data is not None and data.user_failure_data is not None, data
    assert data.user_failure_data.metadata["refused"].value is True
    return data.user_failure_data.description or ""


def dead_letters(config: dict[str, Any]) -> dict[str, Any]:
    return {"ops": {"dead_letters__reprocessing": {"config": config}}}


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"reason": "bogus"}, "reason 'bogus' is not one of: invalid_json"),
        ({"client_id": "Bad Id!"}, "client_id 'Bad Id!'"),
        ({"max_records": 0}, "max_records should be greater than or equal to 1 (got 0)"),
        # An empty group crashed librdkafka (SIGABRT), and Dagster retried the crash twice.
        ({"consumer_group": ""}, "consumer_group: String should have at least 1 character"),
        ({"consumer_group": "a b"}, "consumer_group: String should match pattern"),
        ({"max_wait_days": 1e9}, "max_wait_days should be less than or equal to 36500"),
    ],
)
def test_bad_dead_letter_run_config_is_refused_at_once(
    defs: Any, config: dict[str, Any], said: str
) -> None:
    assert said in refusal_of(run(defs, "reprocess_dead_letters", dead_letters(config)))


def test_out_of_range_config_is_refused_naming_the_field_and_the_range(defs: Any) -> None:
    move = {"ops": {"move": {"config": {"target": "default", "grace_s": -1}}}}
    said = refusal_of(run(defs, "move_client", move, partition="acme"))
    assert "grace_s should be greater than or equal to 0 (got -1" in said
    trace = {"ops": {"trace_event_op": {"config": {"event_id": "x", "since_hours": 0}}}}
    assert "since_hours should be greater than 0 (got 0" in refusal_of(
        run(defs, "trace_event", trace)
    )
    trace["ops"]["trace_event_op"]["config"]["since_hours"] = 1e12  # was an OverflowError
    assert "since_hours should be less than or equal to 876000" in refusal_of(
        run(defs, "trace_event", trace)
    )
    move["ops"]["move"]["config"]["grace_s"] = 1e9
    said = refusal_of(run(defs, "move_client", move, partition="acme"))
    assert "grace_s should be less than or equal to 86400" in said


@pytest.mark.parametrize("job", ["provision_client", "migrate_client", "batch_load_clients"])
def test_a_per_client_job_without_a_partition_is_refused(defs: Any, job: str) -> None:
    assert "launch it for the client's partition" in refusal_of(run(defs, job))


def test_a_batch_load_of_a_removed_partition_succeeds_and_records_nothing(defs: Any) -> None:
    result = run(defs, "batch_load_clients", partition="gone", partition_exists=False)
    assert result.success
    assert not result.get_asset_materialization_events()


@pytest.mark.parametrize("job", ["provision_client", "migrate_client"])
def test_a_lifecycle_run_of_a_removed_partition_is_refused(defs: Any, job: str) -> None:
    said = refusal_of(run(defs, job, partition="gone", partition_exists=False))
    assert "'gone' has no partition any more" in said and "nothing was changed" in said


def test_a_reconciliation_of_a_removed_partition_is_refused(defs: Any) -> None:
    said = refusal_of(run(defs, "reconcile_client", partition="gone", partition_exists=False))
    assert said.startswith("reconciliation refused: client 'gone' has no partition any more")


def test_deprovisioning_without_any_client_says_no_client_was_given(defs: Any) -> None:
    config = {"ops": {"deprovision": {"config": {"confirm": "acme"}}}}
    said = refusal_of(run(defs, "deprovision_client", config))
    assert said.startswith("deprovisioning (no client given) refused: launch the job")
    assert "client ''" not in said


def test_a_trace_not_found_in_dagster_names_since_hours_not_the_cli_flag() -> None:
    report = TraceReport(
        event_id="8a9c1e7e-0000-4000-8000-000000000001",
        client_id=None,
        databases_searched=(),
        rows=(),
        letters=(),
        fates=(),
        raw_copies=(),
        dead_letter_scan="scanned 0 dead letter(s)",
        notes=(),
        unsearched_targets=(),
    )
    rendered = _dagster_text(report, 24)
    assert "--since" not in rendered
    assert "older than since_hours (now 24" in rendered


def test_provisioning_partitions_say_why_each_removed_one_goes() -> None:
    statuses = {"acme": "active", "new": "pending", "old": "deprovisioned"}
    changes = plan_partitions(statuses, ["acme", "old", "typo", "Bad Id!"])
    assert changes.add == ["new"]
    assert changes.remove["typo"] == "not a registered client"
    assert changes.remove["old"] == "the client is deprovisioned"
    assert changes.remove["Bad Id!"].startswith("not a valid client id (")
    assert tick_summary([], [], plan_partitions({}, ["typo"])) == (
        "0 pending client(s); removed partition(s) typo: not a registered client"
    )
    assert tick_summary(["new"], [], changes).startswith("1 pending client(s); not requested: new")


def test_a_provisioning_tick_says_why_each_pending_client_waits_in_groups() -> None:
    from analytics_pipeline.defs.client_lifecycle.provisioning_plan import (
        IN_FLIGHT,
        Attempt,
        PendingClient,
        why_waiting,
    )

    pending = [PendingClient(f"c{i:02d}", "t") for i in range(25)]
    state = {p.client_id: Attempt("t", 3 if p.client_id == "c24" else 1) for p in pending}
    finished = {"provision:c24:t:3"}
    waiting = why_waiting(
        pending, state, ["c00"], lambda key: "finished" if key in finished else "in_flight"
    )
    assert "c00" not in waiting and waiting["c01"] == IN_FLIGHT
    assert waiting["c24"].startswith("its 3 attempt(s) are used up")
    summary = tick_summary(
        [p.client_id for p in pending], ["c00"], plan_partitions({}, []), waiting
    )
    assert summary.startswith("25 pending client(s); run requested: c00; " + IN_FLIGHT + ": c01")
    assert "c10 and 13 more" in summary  # 23 in flight: ten named, the rest counted
    assert "its 3 attempt(s) are used up (see its last provision_client run" in summary
    assert summary.endswith(": c24")
