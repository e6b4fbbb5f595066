"""`dagster dev` with the repository's workspace.yaml and dagster.yaml, against the local stack.

DAGSTER_HOME is prepared like `python -m analytics_pipeline.dagster_home` does; Dagster's
storage and the registry are sandbox databases (tests/dagster_sandbox.py), so the running
sensors see only this test's clients. One pending client is provisioned by a run launched
through GraphQL as the UI does (add the partition, launch a materialization of the per-client
assets); another is provisioned by the daemon's provisioning sensor on its own, and its events are
observed right after by `observe_provisioned_clients`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetRecordsFilter, DagsterRun, RunsFilter

from analytics_core.clients import ClientStatus
from analytics_core.settings import Settings
from analytics_pipeline.defs.reconciliation.assets import EVENTS_KEY
from devstack import api
from tests.dagster_dev_support import (
    LOCATION,
    REPOSITORY,
    GraphQL,
    running_dagster_dev,
    wait_for,
)
from tests.dagster_sandbox import Sandbox, sandbox

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def stack() -> None:
    api.ensure_up(Settings.from_env())


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path / "dagster_home") as box:
        yield box


@pytest.fixture
def dagster_dev(sb: Sandbox, tmp_path: Path) -> Iterator[GraphQL]:
    with running_dagster_dev(sb.env(), tmp_path / "dagster_dev.log") as gql:
        yield gql


ADD_PARTITION = """
mutation Add($repo: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on PythonError { message }
  }
}"""

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""

RUN_STATUS = """
query Status($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"""

JOB_PARTITIONS = """
query Partitions($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { partitionKeysOrError { partitionKeys } }
    ... on PythonError { message }
  }
}"""

STEP_FAILURES = """
query Failures($id: ID!) {
  logsForRun(runId: $id) {
    ... on EventConnection { events { __typename
      ... on ExecutionStepFailureEvent { failureMetadata { description metadataEntries {
        label ... on BoolMetadataEntry { boolValue } } } }
    } }
  }
}"""

PER_CLIENT_JOBS = (
    "provision_client",
    "migrate_client",
    "deprovision_client",
    "reconcile_client",
    "batch_load_clients",
)


def test_dagster_dev_runs_a_provisioning_launched_through_graphql(
    sb: Sandbox, dagster_dev: GraphQL
) -> None:
    gql = dagster_dev
    by_ui, by_sensor = (f"t3-{uuid.uuid4().hex[:8]}" for _ in range(2))
    sb.add_client(by_ui, "k-ui")
    repo = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}

    # The UI's "Add partition" (the sensor may have added it already: both are fine).
    added = gql(ADD_PARTITION, repo=repo, name="clients", key=by_ui)["addDynamicPartition"]
    assert added["__typename"] in {"AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"}
    # The UI's "Materialize" of one partition of the per-client assets.
    params = {
        "selector": {
            **repo,
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": ["client_database"]}, {"path": ["client_schema"]}],
            "assetCheckSelection": [],
        },
        "runConfigData": {},
        "mode": "default",
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": by_ui}]},
    }
    launched = gql(LAUNCH_RUN, params=params)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    assert wait_for_run(gql, run_id) == "SUCCESS"
    row = sb.client(by_ui)
    assert row.status == ClientStatus.ACTIVE
    with sb.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT dagster_run_id FROM client_audit_log WHERE client_id = %s"
            " AND action = 'provisioned'",
            (by_ui,),
        )
        provisioned_by = [r[0] for r in cur.fetchall()]
    # Exactly one run provisioned it (ours, or the sensor's if it got there first).
    assert len(provisioned_by) == 1

    # The daemon's provisioning sensor (running by default) provisions a new pending client.
    sb.add_client(by_sensor, "k-sensor")

    def finished_runs(job: str) -> Callable[[], Sequence[DagsterRun] | None]:
        def done() -> Sequence[DagsterRun] | None:
            only = RunsFilter(job_name=job, tags={"dagster/partition": by_sensor})
            runs = sb.instance.get_runs(filters=only)
            return runs if runs and all(r.is_finished for r in runs) else None

        return done

    runs = wait_for(finished_runs("provision_client"), "the sensor's run", 180)
    assert [r.status.value for r in runs] == ["SUCCESS"]
    assert runs[0].tags["dagster/sensor_name"] == "provisioning_sensor"
    assert runs[0].tags["analytics/client_id"] == by_sensor
    assert runs[0].tags["dagster/run_key"].startswith(f"provision:{by_sensor}:")
    assert sb.client(by_sensor).status == ClientStatus.ACTIVE
    # Its events are observed right after (not "Never observed" until the hourly schedule):
    # one reconciliation, requested for this provisioning run.
    observed = wait_for(finished_runs("reconcile_client"), "the first observation", 180)
    assert [r.status.value for r in observed] == ["SUCCESS"]
    assert observed[0].tags["dagster/sensor_name"] == "observe_provisioned_clients"
    assert observed[0].tags["dagster/run_key"] == f"observe-after:{runs[0].run_id}"
    latest = sb.instance.fetch_observations(
        AssetRecordsFilter(asset_key=EVENTS_KEY, asset_partitions=[by_sensor]),
        limit=1,
    ).records
    assert [r.run_id for r in latest] == [observed[0].run_id]

    # Every per-client job is launched for a client: the launchpad's partition picker lists
    # the clients.
    for job in PER_CLIENT_JOBS:
        found = gql(JOB_PARTITIONS, selector={**repo, "pipelineName": job})["pipelineOrError"]
        assert found["__typename"] == "Pipeline", (job, found)
        assert {by_ui, by_sensor} <= set(found["partitionKeysOrError"]["partitionKeys"]), job
    # Reconciliation from the Jobs page, for one client (it used to fail without a partition).
    reconcile = launch_for_partition(gql, repo, "reconcile_client", by_ui, {})
    assert wait_for_run(gql, reconcile) == "SUCCESS"
    # A deprovisioning typo is a clean refusal: it says why, changes nothing, is audited.
    typo = {"ops": {"deprovision": {"config": {"confirm": by_sensor + "x"}}}}
    refused = launch_for_partition(gql, repo, "deprovision_client", by_sensor, typo)
    assert wait_for_run(gql, refused) == "FAILURE"
    events = gql(STEP_FAILURES, id=refused)["logsForRun"]["events"]
    [failure] = [e for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
    assert "does not match client id" in failure["failureMetadata"]["description"]
    flags = {m["label"]: m.get("boolValue") for m in failure["failureMetadata"]["metadataEntries"]}
    assert flags["refused"] is True
    assert sb.client(by_sensor).status == ClientStatus.ACTIVE
    with sb.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT action, dagster_run_id FROM client_audit_log WHERE client_id = %s"
            " AND action = 'deprovision_refused'",
            (by_sensor,),
        )
        assert cur.fetchall() == [("deprovision_refused", refused)]


def wait_for_run(gql: GraphQL, run_id: str) -> str:
    def finished() -> str | None:
        status = gql(RUN_STATUS, id=run_id)["runOrError"]["status"]
        return status if status in {"SUCCESS", "FAILURE", "CANCELED"} else None

    return str(wait_for(finished, f"run {run_id}", 180))


def launch_for_partition(
    gql: GraphQL, repo: dict[str, str], job: str, partition: str, run_config: dict[str, Any]
) -> str:
    """Launch a job for one partition, as the launchpad does; returns the run id."""
    params = {
        "selector": {**repo, "pipelineName": job},
        "runConfigData": run_config,
        "mode": "default",
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
    }
    launched = gql(LAUNCH_RUN, params=params)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return str(launched["run"]["runId"])
