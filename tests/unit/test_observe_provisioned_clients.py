"""Which successful runs make `observe_provisioned_clients` observe a client (pure part; the
daemon evaluating it after a real provisioning is in tests/integration/test_dagster_dev.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    SensorResult,
    build_sensor_context,
)

from analytics_pipeline import sensor_cursor
from analytics_pipeline.defs.reconciliation.sensors import (
    FIRST_LOOKBACK,
    OVERLAP,
    RUNS_PER_TICK,
    FinishedRun,
    next_cursor,
    observation_requests,
    observe_provisioned_clients,
    provisioned_client,
    read_from,
)

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


# -- the evaluation: every provisioning since the last tick, in one tick ------------------


def _finished(run_id: str, job: str, client: str | None, at: datetime) -> FinishedRun:
    tags = {} if client is None else {"dagster/partition": client}
    return FinishedRun(run_id, job, None, tags, at)


def test_every_provisioning_since_the_last_tick_is_observed_unless_its_partition_is_gone() -> None:
    at = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    runs = [
        _finished("r1", "provision_client", "acme", at),
        _finished("r2", "reconcile_client", "acme", at),
        _finished("r3", "provision_client", "beta", at),
        _finished("r4", "provision_client", "gone", at),
        _finished("r5", "provision_client", "gamma", at),
    ]
    requests = observation_requests(runs, lambda client: client != "gone")
    assert [(r.run_key, r.partition_key) for r in requests] == [
        ("observe-after:r1", "acme"),
        ("observe-after:r3", "beta"),
        ("observe-after:r5", "gamma"),
    ]
    assert all(r.tags["analytics/client_id"] == r.partition_key for r in requests)
    # Ahead of the hourly sweep's runs in the queue (a new client is observed in seconds).
    assert all(r.tags["dagster/priority"] == "5" for r in requests)


def test_the_cursor_reads_from_its_time_less_the_overlap_and_moves_to_now() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert read_from(None, now) == now - FIRST_LOOKBACK
    assert read_from("not json", now) == now - FIRST_LOOKBACK
    cursor = sensor_cursor.encode({"after": now.timestamp()})
    assert read_from(cursor, now + timedelta(minutes=5)) == now - OVERLAP
    since = now - OVERLAP
    few = [_finished("r1", "provision_client", "acme", now - timedelta(seconds=5))]
    assert next_cursor(few, since, now) == now
    assert next_cursor([], since, now) == now
    page = [
        _finished(f"r{i}", "provision_client", "acme", since + timedelta(milliseconds=i))
        for i in range(RUNS_PER_TICK)
    ]
    assert next_cursor(page, since, now) == page[-1].updated_at  # the rest next tick


def test_an_evaluation_on_a_real_instance_requests_all_of_a_burst_at_once() -> None:
    """Against Dagster's own run storage (an ephemeral instance): three clients provisioned
    since the last tick give three requests in one evaluation, a deprovisioned one none."""
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("clients", ["c1", "c2", "c3"])
        for client in ("c1", "c2", "c3", "removed"):
            instance.add_run(
                DagsterRun(
                    job_name="provision_client",
                    run_id=f"run-{client}",
                    status=DagsterRunStatus.SUCCESS,
                    tags={"dagster/partition": client},
                )
            )
        instance.add_run(
            DagsterRun(
                job_name="provision_client",
                run_id="run-failed",
                status=DagsterRunStatus.FAILURE,
                tags={"dagster/partition": "c1"},
            )
        )
        result = observe_provisioned_clients(build_sensor_context(instance=instance))
        assert isinstance(result, SensorResult)
        assert sorted((r.run_key, r.partition_key) for r in result.run_requests or []) == [
            ("observe-after:run-c1", "c1"),
            ("observe-after:run-c2", "c2"),
            ("observe-after:run-c3", "c3"),
        ]
        # The next evaluation re-reads the overlap: the same run keys, which Dagster does
        # not launch twice; past the overlap nothing is requested.
        again = observe_provisioned_clients(
            build_sensor_context(instance=instance, cursor=result.cursor)
        )
        assert isinstance(again, SensorResult)
        first_keys = {r.run_key for r in result.run_requests or []}
        assert {r.run_key for r in again.run_requests or []} <= first_keys
        later = sensor_cursor.encode({"after": (datetime.now(UTC) + OVERLAP).timestamp() + 1})
        quiet = observe_provisioned_clients(build_sensor_context(instance=instance, cursor=later))
        assert isinstance(quiet, SensorResult) and not quiet.run_requests
        assert quiet.skip_reason is not None
