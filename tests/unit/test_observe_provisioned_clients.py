"""Which successful runs make `observe_provisioned_clients` observe a client (pure part; the
daemon evaluating it after a real provisioning is in tests/integration/test_dagster_dev.py)."""

from __future__ import annotations

from dagster import AssetKey

from analytics_pipeline.defs.reconciliation.sensors import provisioned_client

PARTITION = {"dagster/partition": "acme"}


def test_the_provisioning_job_names_its_partition() -> None:
    assert provisioned_client("provision_client", None, PARTITION) == "acme"


def test_a_ui_materialization_that_included_the_database_names_its_partition() -> None:
    keys = {AssetKey("client_database"), AssetKey("client_schema")}
    assert provisioned_client("__ASSET_JOB", keys, PARTITION) == "acme"


def test_runs_that_provisioned_nothing_request_nothing() -> None:
    # A reconciliation's own success must not trigger another (no loop).
    assert provisioned_client("reconcile_client", {AssetKey("client_events")}, PARTITION) is None
    assert provisioned_client("migrate_client", None, PARTITION) is None
    assert provisioned_client("__ASSET_JOB", {AssetKey("users")}, PARTITION) is None
    # Not partitioned: there is no client to observe.
    assert provisioned_client("provision_client", None, {}) is None
    assert provisioned_client("provision_client", None, {"dagster/partition": ""}) is None
