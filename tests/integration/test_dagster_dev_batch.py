"""`dagster dev` with the batch and dead-letter definitions: the dlt assets and the
reprocessing job appear with the per-client partitions, and a backfill launched through
GraphQL for two clients succeeds (twice, without duplicating a row).

Dagster's storage and the registry are sandbox databases (tests/dagster_sandbox.py). The
code location is the repository's workspace.yaml.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analytics_core import lifecycle
from analytics_core.batch.seed_sample import seed
from analytics_core.clickhouse import http_client
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

BATCH_KEYS = [["batch", "users"], ["batch", "page_views"]]


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    api.ensure_up(Settings.from_env())
    with sandbox(tmp_path / "dagster_home", prefix="t4") as box:
        yield box


@pytest.fixture
def dagster_dev(sb: Sandbox, tmp_path: Path) -> Iterator[GraphQL]:
    env = {**sb.env(), "RUNTIME__DLTHUB_TELEMETRY": "false", "DAGSTER_DISABLE_TELEMETRY": "1"}
    with running_dagster_dev(env, tmp_path / "dagster_dev.log") as gql:
        yield gql


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
        with sb.connections() as conns:
            provisioned = lifecycle.provision(conns, c)
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
