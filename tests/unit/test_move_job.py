"""The `move_client` Dagster job: refusals that change nothing, before any connection."""

from __future__ import annotations

from dagster import DagsterInstance

from analytics_pipeline.definitions import make_definitions
from tests.closed_resources import CLOSED_RESOURCES


def _failure(config: dict[str, object] | None, partition: str | None) -> tuple[str, bool]:
    job = make_definitions(CLOSED_RESOURCES).resolve_job_def("move_client")
    instance = DagsterInstance.ephemeral()
    if partition is not None:
        instance.add_dynamic_partitions("clients", [partition])
    result = job.execute_in_process(
        instance=instance,
        run_config={"ops": {"move": {"config": config}}} if config is not None else None,
        partition_key=partition,
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    data = failure.step_failure_data
    assert data is not None and data.user_failure_data is not None
    refused = data.user_failure_data.metadata["refused"].value
    return data.user_failure_data.description or "", bool(refused)


def test_without_a_client_partition_the_move_is_refused() -> None:
    description, refused = _failure({"target": "ch2"}, None)
    assert "launch it for the client's partition" in description and refused


def test_without_a_target_or_with_both_target_and_abandon_it_is_refused() -> None:
    for config in ({}, {"target": "ch2", "abandon": True}):
        description, refused = _failure(config, "acme")
        assert "set either target" in description and refused
        assert "Connection refused" not in description
