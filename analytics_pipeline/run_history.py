"""Questions about earlier Dagster runs that sensors and jobs ask the instance."""

from __future__ import annotations

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from analytics_pipeline.tags import CLIENT_TAG, PARTITION_TAG, RUN_KEY

_RUNNING = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def run_key_state(instance: DagsterInstance, run_key: str) -> str:
    """'none' (no run carries the key yet), 'in_flight' (one is not finished) or 'finished'."""
    runs = instance.get_runs(filters=RunsFilter(tags={RUN_KEY: run_key}))
    if not runs:
        return "none"
    return "finished" if all(r.is_finished for r in runs) else "in_flight"


def _runs_for_client(
    instance: DagsterInstance, client_id: str, statuses: list[DagsterRunStatus]
) -> dict[str, DagsterRun]:
    """The client's runs in `statuses` by id, found by partition key or client tag."""
    found: dict[str, DagsterRun] = {}
    for tag in (PARTITION_TAG, CLIENT_TAG):
        for run in instance.get_runs(filters=RunsFilter(tags={tag: client_id}, statuses=statuses)):
            found.setdefault(run.run_id, run)
    return found


def running_runs_for_client(
    instance: DagsterInstance, client_id: str, *, exclude_run_id: str | None = None
) -> list[str]:
    """Ids of runs now executing for the client (partition key or client tag)."""
    return sorted(set(_runs_for_client(instance, client_id, _RUNNING)) - {exclude_run_id})


def cancel_queued_runs_for_client(instance: DagsterInstance, client_id: str, why: str) -> list[str]:
    """Cancel the client's runs still waiting in the queue (partition key or client tag);
    their ids. (A run of a removed partition fails in Dagster itself as its first step
    starts, before any of our code can refuse, with an internal stack trace.)"""
    queued = _runs_for_client(instance, client_id, [DagsterRunStatus.QUEUED])
    for run in queued.values():
        instance.report_run_canceled(run, message=why)
    return list(queued)
