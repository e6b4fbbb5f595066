"""What a failed step says in its run's failure alert (alert_on_run_failure), and whether
the run only refused: a refusal of ours, or Dagster's partition errors at a step's start."""

from __future__ import annotations

from dagster import Failure
from dagster._core.execution.plan.objects import StepFailureData, UserFailureData
from dagster._utils.error import SerializableErrorInfo

from analytics_pipeline.defs.alerts.sensors import step_failure
from analytics_pipeline.failures import refusal


def _error(message: str, cls: str) -> SerializableErrorInfo:
    return SerializableErrorInfo(message=message, stack=[], cls_name=cls)


def test_dagster_failing_a_step_for_want_of_its_partition_is_a_refusal() -> None:
    # The texts Dagster 1.13 fails such steps with, before any of their code runs.
    no_partition = StepFailureData(
        error=_error(
            "dagster._core.errors.DagsterInvariantViolationError: Cannot access partition_key "
            "for a non-partitioned run\n",
            "DagsterInvariantViolationError",
        ),
        user_failure_data=None,
    )
    text, refused = step_failure("client_events_observation", no_partition, None)
    assert refused and text.startswith("client_events_observation: refused: the run was")
    assert "launched without a client" in text
    gone = StepFailureData(
        error=_error(
            "dagster._core.errors.DagsterInvalidInvocationError: Partition range p-1 to p-1 "
            "is not a valid range. Nonexistent partition keys: ['p-1']\n",
            "DagsterInvalidInvocationError",
        ),
        user_failure_data=None,
    )
    text, refused = step_failure("client_events_observation", gone, "p-1")
    assert refused and "no client partition 'p-1'" in text


def test_other_errors_stay_failures_and_our_refusals_say_what_was_refused() -> None:
    boom = StepFailureData(error=_error("ClickHouse is down\n", "OSError"), user_failure_data=None)
    assert step_failure("s", boom, "p-1") == ("s: ClickHouse is down", False)
    mine: Failure = refusal("confirmation 'x' does not match")
    ours = StepFailureData(
        error=None,
        user_failure_data=UserFailureData(
            label="intentional-failure", description=mine.description, metadata=mine.metadata
        ),
    )
    assert step_failure("s", ours, "p-1") == ("s: confirmation 'x' does not match", True)
