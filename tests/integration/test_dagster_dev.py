"""`dagster dev` with the repository's workspace.yaml and dagster.yaml, against the local stack.

DAGSTER_HOME is prepared like `python -m analytics_pipeline.dagster_home` does; Dagster's
storage and the registry are sandbox databases (tests/dagster_sandbox.py), so the running
sensors see only this test's clients. One pending client is provisioned by a run launched
through GraphQL as the UI does (add the partition, launch a materialization of the per-client
assets); another is provisioned by the daemon's provisioning sensor on its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from dagster import DagsterRun, RunsFilter

from analytics_core.clients import ClientStatus
from analytics_core.settings import Settings
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

    def finished() -> str | None:
        status = gql(RUN_STATUS, id=run_id)["runOrError"]["status"]
        return status if status in {"SUCCESS", "FAILURE", "CANCELED"} else None

    assert wait_for(finished, f"run {run_id}", 180) == "SUCCESS"
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

    def sensor_run_done() -> Sequence[DagsterRun] | None:
        runs = sb.instance.get_runs(filters=RunsFilter(tags={"dagster/partition": by_sensor}))
        return runs if runs and all(r.is_finished for r in runs) else None

    runs = wait_for(sensor_run_done, "the sensor's run", 180)
    assert [r.status.value for r in runs] == ["SUCCESS"]
    assert runs[0].tags["dagster/sensor_name"] == "provisioning_sensor"
    assert runs[0].tags["analytics/client_id"] == by_sensor
    assert runs[0].tags["dagster/run_key"].startswith(f"provision:{by_sensor}:")
    assert sb.client(by_sensor).status == ClientStatus.ACTIVE
