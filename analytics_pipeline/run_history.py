"""Questions about earlier Dagster runs that sensors and jobs ask the instance."""

from __future__ import annotations

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from analytics_pipeline.tags import CLIENT_TAG, PARTITION_TAG, RUN_KEY

_RUNNING = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def run_key_state(instance: DagsterInstance, run_key: str) -> str:
    """'none' (no run carries the key yet), 'in_flight' (one is not finished) or 'finished'."""
    runs = instance.get_runs(filters=RunsFilter(tags={RUN_KEY: run_key}))
    if not runs:
        return "none"
    return "finished" if all(r.is_finished for r in runs) else "in_flight"


def running_runs_for_client(
    instance: DagsterInstance, client_id: str, *, exclude_run_id: str | None = None
) -> list[str]:
    """Ids of runs now executing for the client (partition key or client tag)."""
    found: set[str] = set()
    for tag in (PARTITION_TAG, CLIENT_TAG):
        for run in instance.get_runs(filters=RunsFilter(tags={tag: client_id}, statuses=_RUNNING)):
            if run.run_id != exclude_run_id:
                found.add(run.run_id)
    return sorted(found)
