"""`dagster dev` with the batch and dead-letter definitions: the dlt assets and the
reprocessing job appear with the per-client partitions, and a backfill launched through
GraphQL for two clients succeeds (twice, without duplicating a row).

Dagster's storage and the registry are sandbox databases (analytics_pipeline.testing). The
code location is the repository's workspace.yaml when definitions.py already includes the
batch assets, otherwise a small module written by this test that assembles them the same way.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey

from analytics_core import lifecycle
from analytics_core.batch.seed_sample import seed
from analytics_core.clickhouse import http_client
from analytics_core.settings import REPO_ROOT, Settings
from analytics_pipeline.testing import Sandbox, sandbox
from devstack import api

pytestmark = pytest.mark.integration

DAGSTER = Path(REPO_ROOT) / ".venv" / "bin" / "dagster"
LOCATION = "analytics_pipeline"
REPOSITORY = "__repository__"
BATCH_KEYS = [["batch", "users"], ["batch", "page_views"]]

DEFINITIONS_MODULE = """
from dagster import Definitions

from analytics_pipeline.assets.batch_loads import BATCH_ASSETS, BATCH_RESOURCES
from analytics_pipeline.assets.dead_letters import DEAD_LETTER_ASSETS
from analytics_pipeline.assets.provisioning import client_database
from analytics_pipeline.resources import default_resources
from analytics_pipeline.schedules.batch_loads import BATCH_JOBS, BATCH_SCHEDULES
from analytics_pipeline.schedules.dead_letters import DEAD_LETTER_JOBS, DEAD_LETTER_SCHEDULES

defs = Definitions(
    assets=[client_database, *BATCH_ASSETS, *DEAD_LETTER_ASSETS],
    jobs=[*BATCH_JOBS, *DEAD_LETTER_JOBS],
    schedules=[*BATCH_SCHEDULES, *DEAD_LETTER_SCHEDULES],
    resources={**default_resources(), **BATCH_RESOURCES},
)
"""


def workspace(tmp_path: Path) -> Path:
    """The repository's workspace if it already serves the batch assets, else our own."""
    from analytics_pipeline.definitions import defs

    keys = defs.resolve_asset_graph().get_all_asset_keys()
    if all(AssetKey(k) in keys for k in BATCH_KEYS):
        return REPO_ROOT / "workspace.yaml"
    module = tmp_path / "t4_batch_definitions.py"
    module.write_text(DEFINITIONS_MODULE)
    path = tmp_path / "workspace.yaml"
    path.write_text(
        "load_from:\n"
        "  - python_file:\n"
        f"      relative_path: {module}\n"
        "      attribute: defs\n"
        f"      location_name: {LOCATION}\n"
        f"      working_directory: {REPO_ROOT}\n"
    )
    return path


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    api.ensure_up(Settings.from_env())
    with sandbox(tmp_path / "dagster_home", prefix="t4") as box:
        yield box


@pytest.fixture
def dagster_dev(sb: Sandbox, tmp_path: Path) -> Iterator[GraphQL]:
    port = free_port()
    log_path = tmp_path / "dagster_dev.log"
    log = log_path.open("wb")
    env = {
        **os.environ,
        **sb.env(),
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    proc = subprocess.Popen(
        [str(DAGSTER), "dev", "-w", str(workspace(tmp_path)), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: webserver, daemon, code server
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
mutation Add($repo: RepositorySelector!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: "clients", partitionKey: $key) {
    __typename
    ... on PythonError { message }
  }
}"""

REPOSITORY_CONTENTS = """
query Repo($repo: RepositorySelector!) {
  repositoryOrError(repositorySelector: $repo) {
    __typename
    ... on Repository {
      jobs { name }
      schedules { name scheduleState { status } }
      assetNodes {
        assetKey { path }
        isPartitioned
        partitionKeysByDimension { partitionKeys }
      }
    }
  }
}"""

LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}"""

BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions }
    ... on PythonError { message }
  }
}"""

BACKFILL_RUNS = """
query Runs($id: String!) {
  runsOrError(filter: { tags: [{ key: "dagster/backfill", value: $id }] }) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""


def counts(settings: Settings, database: str) -> dict[str, tuple[int, int]]:
    ch = http_client(settings.clickhouse)
    try:
        out = {}
        for table, key in (("users", "user_id"), ("page_views", "page_view_id")):
            q = f"SELECT count(), uniqExact({key}) FROM `{database}`.`{table}`"
            rows, keys = ch.query(q).result_rows[0]
            out[table] = (int(rows), int(keys))
        return out
    finally:
        ch.close()


def backfill(gql: GraphQL, clients: list[str]) -> list[dict[str, Any]]:
    params = {
        "partitionNames": clients,
        "assetSelection": [{"path": k} for k in BATCH_KEYS],
        "fromFailure": False,
        "title": "t4 batch backfill",
    }
    launched = gql(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def done() -> str | None:
        status = gql(BACKFILL, id=backfill_id)["partitionBackfillOrError"]["status"]
        return status if status not in {"REQUESTED", "CANCELING", "FAILING"} else None

    status = wait_for(done, f"backfill {backfill_id}", 300)
    runs = gql(BACKFILL_RUNS, id=backfill_id)["runsOrError"]["results"]
    assert status in {"COMPLETED", "COMPLETED_SUCCESS"}, (status, runs)
    return list(runs)


def test_backfill_over_two_clients_through_graphql(
    sb: Sandbox, dagster_dev: GraphQL, tmp_path: Path
) -> None:
    gql = dagster_dev
    repo = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
    clients = sorted(f"t4-{uuid.uuid4().hex[:8]}" for _ in range(2))
    databases = {}
    for c in clients:
        sb.add_client(c, f"key-{c}")
        provisioned = lifecycle.provision(sb.settings, c)
        assert isinstance(provisioned, lifecycle.Provisioned), provisioned
        databases[c] = provisioned.database
        seeded = seed(sb.settings, c, str(tmp_path / "landing" / c))
        assert seeded.__class__.__name__ == "Seeded", seeded
        added = gql(ADD_PARTITION, repo=repo, key=c)["addDynamicPartition"]
        assert added["__typename"] in {
            "AddDynamicPartitionSuccess",
            "DuplicateDynamicPartitionError",
        }, added

    contents = gql(REPOSITORY_CONTENTS, repo=repo)["repositoryOrError"]
    assert contents["__typename"] == "Repository", contents
    assert {"batch_load_clients", "reprocess_dead_letters"} <= {j["name"] for j in contents["jobs"]}
    schedules = {s["name"]: s["scheduleState"]["status"] for s in contents["schedules"]}
    assert schedules["batch_loads_hourly"] == "RUNNING"
    assert "reprocess_dead_letters_every_10_min" in schedules
    nodes = {tuple(n["assetKey"]["path"]): n for n in contents["assetNodes"]}
    for key in BATCH_KEYS:
        node = nodes[tuple(key)]
        assert node["isPartitioned"]
        assert set(clients) <= set(node["partitionKeysByDimension"][0]["partitionKeys"])
    assert not nodes[("dead_letters", "reprocessing")]["isPartitioned"]

    # A pending client in the selection is skipped by its run, which still succeeds.
    pending = f"t4-{uuid.uuid4().hex[:8]}"
    sb.add_client(pending, f"key-{pending}")
    assert gql(ADD_PARTITION, repo=repo, key=pending)["addDynamicPartition"]["__typename"] in {
        "AddDynamicPartitionSuccess",
        "DuplicateDynamicPartitionError",
    }
    selection = sorted([*clients, pending])
    for attempt in range(2):  # the backfill, then the same backfill again: no duplicates
        runs = backfill(gql, selection)
        assert len(runs) == 3 and {r["status"] for r in runs} == {"SUCCESS"}, runs
        partitions = sorted(
            t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition"
        )
        assert partitions == selection, (attempt, runs)
        for c in clients:
            assert counts(sb.settings, databases[c]) == {"users": (7, 7), "page_views": (42, 42)}
