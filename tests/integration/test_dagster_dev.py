"""`dagster dev` with the repository's workspace.yaml and dagster.yaml, against the local stack.

DAGSTER_HOME is prepared like `python -m analytics_pipeline.dagster_home` does; Dagster's
storage and the registry are sandbox databases (analytics_pipeline.testing), so the running
sensors see only this test's clients. One pending client is provisioned by a run launched
through GraphQL as the UI does (add the partition, launch a materialization of the per-client
assets); another is provisioned by the daemon's provisioning sensor on its own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterRun, RunsFilter

from analytics_core.clients import ClientStatus
from analytics_core.settings import REPO_ROOT, Settings
from analytics_pipeline.testing import Sandbox, sandbox
from devstack import api

pytestmark = pytest.mark.integration

DAGSTER = Path(REPO_ROOT) / ".venv" / "bin" / "dagster"
LOCATION = "analytics_pipeline"
REPOSITORY = "__repository__"


@pytest.fixture(scope="module", autouse=True)
def stack() -> None:
    api.ensure_up(Settings.from_env())


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path / "dagster_home") as box:
        yield box


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GraphQL:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/graphql"

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        req = urllib.request.Request(
            self.url, body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            doc = json.loads(resp.read())
        assert not doc.get("errors"), doc["errors"]
        return dict(doc["data"])


def wait_for(predicate: Callable[[], Any], what: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture
def dagster_dev(sb: Sandbox, tmp_path: Path) -> Iterator[GraphQL]:
    port = free_port()
    log_path = tmp_path / "dagster_dev.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [str(DAGSTER), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT,
        env={**os.environ, **sb.env()},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: webserver, daemon, code servers
    )
    gql = GraphQL(port)
    try:
        wait_for(lambda: proc.poll() is not None or gql("{ version }"), "the webserver", 120)
        assert proc.poll() is None, log_path.read_text()[-3000:]
        wait_for(lambda: location_loaded(gql), "the code location", 120)
        yield gql
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()


def location_loaded(gql: GraphQL) -> bool:
    data = gql(
        """{ workspaceOrError { ... on Workspace { locationEntries {
             name loadStatus locationOrLoadError { __typename ... on PythonError { message } }
        } } } }"""
    )
    for entry in data["workspaceOrError"]["locationEntries"]:
        if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"]
            assert loaded["__typename"] == "RepositoryLocation", loaded
            return True
    return False


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
