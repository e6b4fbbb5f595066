"""The Dagster code location loads and holds what the client lifecycle needs (no servers).

Also the pure parts of the sensors (which runs a tick requests), the instance configuration
(dagster.yaml, workspace.yaml) and a refused deprovisioning, which must touch nothing: its
resources point at a closed port, so any connection attempt would fail the test.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DynamicPartitionsDefinition
from dagster._core.instance.config import dagster_instance_config

from analytics_core.migrations.files import MigrationFile, checksum
from analytics_core.migrations.planning import Plan, Refused
from analytics_core.settings import REPO_ROOT, Settings, SettingsError
from analytics_pipeline import dagster_home
from analytics_pipeline import sensor_cursor as cursor
from analytics_pipeline.definitions import defs, make_definitions
from analytics_pipeline.defs.alerts.resources import AlertsResource, process_alert_settings
from analytics_pipeline.defs.client_lifecycle.migrations_plan import (
    ClientSchemaState,
    needs,
    plan_migrations,
    plan_runs,
    signature,
)
from analytics_pipeline.defs.client_lifecycle.provisioning_plan import (
    MAX_ATTEMPTS,
    Attempt,
    PendingClient,
    attempts_from_cursor,
    attempts_to_cursor,
    plan_provisioning,
)
from analytics_pipeline.defs.reconciliation.resources import (
    ReconciliationResource,
    process_reconciliation_options,
)
from analytics_pipeline.resources import (
    ClickHouseResource,
    KafkaResource,
    PostgresMetadataResource,
    RedisResource,
    process_settings,
)
from tests.closed_resources import CLOSED_RESOURCES


@pytest.fixture
def fresh_process_settings() -> Iterator[None]:
    """Settings are read once per process: forget them around a test that changes the env."""
    caches = (process_settings, process_alert_settings, process_reconciliation_options)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


def test_definitions_hold_the_lifecycle_assets_jobs_and_sensors() -> None:
    loaded = defs()  # what Dagster does with the lazy entry point
    repo = loaded.get_repository_def()
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} >= {
        "client_database",
        "client_schema",
        "client_events",
    }
    for key in ("client_database", "client_schema"):
        partitions = repo.asset_graph.get(AssetKey(key)).partitions_def
        assert isinstance(partitions, DynamicPartitionsDefinition)
        assert partitions.name == "clients"
    assert {"provision_client", "migrate_client", "deprovision_client"} <= {
        j.name for j in repo.get_all_jobs()
    }
    sensors = {s.name: s for s in repo.sensor_defs}
    assert set(sensors) >= {
        "provisioning_sensor",
        "migrations_sensor",
        "alert_on_run_failure",
        "alert_on_failed_asset_checks",
        "alert_on_stuck_clients",
        "alert_on_dead_letter_growth",
        "observe_provisioned_clients",
    }
    assert {"reconcile_client", "trace_event"} <= {j.name for j in repo.get_all_jobs()}
    assert sensors["provisioning_sensor"].job_name == "provision_client"
    assert sensors["migrations_sensor"].job_name == "migrate_client"
    assert sensors["observe_provisioned_clients"].job_name == "reconcile_client"
    assert set(loaded.resources or {}) >= {"postgres", "clickhouse", "redis", "kafka"}
    assert repo.asset_graph.get(AssetKey("client_schema")).parent_keys == {
        AssetKey("client_database")
    }


def test_resources_default_to_the_routers_environment(
    monkeypatch: pytest.MonkeyPatch, fresh_process_settings: None
) -> None:
    monkeypatch.setenv("POSTGRES_HOST", "pg.example")
    monkeypatch.setenv("CLICKHOUSE_HTTP_PORT", "18123")
    monkeypatch.setenv("REDIS_DB", "3")
    monkeypatch.setenv("KAFKA_RAW_TOPIC", "raw_x")
    monkeypatch.setenv("ALERT_DEAD_LETTER_THRESHOLD", "7")
    monkeypatch.setenv("RECONCILIATION_GRACE_S", "12")
    env = Settings.from_env()
    assert PostgresMetadataResource().settings() == env.postgres
    assert ClickHouseResource().settings() == env.clickhouse
    assert RedisResource().settings() == env.redis
    assert KafkaResource().settings() == env.kafka
    assert AlertsResource().settings().dead_letter_threshold == 7
    assert ReconciliationResource().options().grace_s == 12
    # A configured field wins over the environment, for that field only.
    pg = PostgresMetadataResource(dbname="other").settings()
    assert (pg.host, pg.dbname) == ("pg.example", "other")
    assert PostgresMetadataResource(port=1).settings().port == 1
    assert ClickHouseResource(ops_database="ops2").settings().http_port == 18123
    assert ReconciliationResource(groups=["g"]).options().groups == ("g",)
    assert ClickHouseResource(migrations_dir="/m").migrations_path() == Path("/m")
    # Read once per process: a later change of the environment is not seen.
    monkeypatch.setenv("POSTGRES_HOST", "elsewhere.example")
    assert PostgresMetadataResource().settings().host == "pg.example"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ALERT_SINKS", "bogus", "ALERT_SINKS: unknown sink"),
        ("ALERT_WEBHOOK_URL", "ftp://x", "ALERT_WEBHOOK_URL must be an http"),
        ("RECONCILIATION_GRACE_S", "abc", "RECONCILIATION_GRACE_S='abc' is not a number"),
        ("POSTGRES_PORT", "abc", "POSTGRES_PORT='abc' is not an integer"),
    ],
)
def test_a_bad_variable_fails_the_code_location_as_it_loads(
    monkeypatch: pytest.MonkeyPatch,
    fresh_process_settings: None,
    variable: str,
    value: str,
    message: str,
) -> None:
    """Not a sensor tick or a run hours later: Dagster shows the load error on the code
    location, with the message."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message):
        defs()


IMPORT_PROBE = """
import os, sys
# The variables our settings are made of (the libraries' own variables are theirs).
VARIABLES = ("POSTGRES_", "CLICKHOUSE_", "KAFKA_", "REDIS_", "PIPELINE_", "ALERT_",
             "RECONCILIATION_", "DAGSTER_POSTGRES_DB", "ROUTER_", "RUNTIME__DLTHUB")
CODE = ("/analytics_core/", "/analytics_pipeline/")
Env = type(os.environ)
original = Env.__getitem__
reads = []

def ours():
    # Our code is on the stack before another module's import-time code (a library that
    # copies the environment while it is imported is not us).
    frame = sys._getframe(2)
    while frame is not None:
        if any(c in frame.f_code.co_filename for c in CODE):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        if frame.f_code.co_name == "<module>":
            return None
        frame = frame.f_back
    return None

def recording(self, key):
    where = ours() if key.startswith(VARIABLES) else None
    if where:
        reads.append(f"{key} at {where}")
    return original(self, key)

Env.__getitem__ = recording
import analytics_pipeline.definitions as definitions
Env.__getitem__ = original
from analytics_pipeline.resources import process_settings
print({"reads": reads, "settings_read": process_settings.cache_info().currsize,
       "state_dir_made": os.path.exists(os.environ["PIPELINE_STATE_DIR"]),
       "lazy": type(definitions.defs).__name__})
repo = definitions.defs().get_repository_def()
made = os.path.exists(os.environ["PIPELINE_STATE_DIR"])
print({"jobs": len(repo.get_all_jobs()), "state_dir_made": made})
"""


def test_importing_the_code_location_reads_no_environment(tmp_path: Path) -> None:
    """Importing `analytics_pipeline.definitions` reads no variable and creates nothing; the
    settings are read (once) when Dagster loads `defs`."""
    state = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO_ROOT,
        env={**os.environ, "PIPELINE_STATE_DIR": str(state)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    at_import, loaded = (ast.literal_eval(line) for line in done.stdout.strip().splitlines()[-2:])
    assert at_import == {
        "reads": [],
        "settings_read": 0,
        "state_dir_made": False,
        "lazy": "LazyDefinitions",
    }
    assert loaded["jobs"] > 5 and loaded["state_dir_made"] is True


def test_dagster_yaml_is_a_valid_instance_config_with_postgres_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = dagster_home.prepare(tmp_path / "home")
    assert dagster_home.prepare(home) == home  # idempotent
    assert (home / "dagster.yaml").read_bytes() == (REPO_ROOT / "dagster.yaml").read_bytes()
    for name, value in dagster_home.dagster_env(Settings.from_env(), home).items():
        monkeypatch.setenv(name, value)
    config, _ = dagster_instance_config(str(home))
    pg = config["storage"]["postgres"]["postgres_db"]
    assert pg == {
        "hostname": {"env": "POSTGRES_HOST"},
        "port": {"env": "POSTGRES_PORT"},
        "username": {"env": "POSTGRES_USER"},
        "password": {"env": "POSTGRES_PASSWORD"},
        "db_name": {"env": "DAGSTER_POSTGRES_DB"},
        "scheme": "postgresql+psycopg2",
    }
    assert config["telemetry"]["enabled"] is False
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_retries"] == {
        "enabled": True,
        "max_retries": 2,
        "retry_on_asset_or_op_failure": False,
    }
    limits = {
        lim["key"]: (lim["limit"], lim["value"])
        for lim in config["concurrency"]["runs"]["tag_concurrency_limits"]
    }
    per_value = {"applyLimitPerUniqueValue": True}
    assert limits == {"analytics/client_id": (1, per_value), "dagster/partition": (1, per_value)}


def test_a_run_is_one_process_and_the_queue_is_sized_for_a_small_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_definitions().get_repository_def()
    for job in repo.get_all_jobs():  # UI materializations (__ASSET_JOB) included
        assert job.executor_def.name == "in_process", job.name
    home = dagster_home.prepare(tmp_path / "home")
    for name, value in dagster_home.dagster_env(Settings.from_env(), home).items():
        monkeypatch.setenv(name, value)
    config, _ = dagster_instance_config(str(home))
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 3
    assert config["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1


def test_print_env_never_prints_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_PASSWORD", "s3cret")
    lines = dagster_home.export_lines(Settings.from_env(), Path("/h"))
    assert "export DAGSTER_HOME=/h" in lines
    assert not any("s3cret" in line for line in lines)


def test_workspace_yaml_loads_the_definitions_module() -> None:
    doc = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    [entry] = doc["load_from"]
    assert entry["python_module"]["module_name"] == "analytics_pipeline.definitions"
    assert entry["python_module"]["attribute"] == "defs"


def test_deprovisioning_with_a_wrong_confirmation_is_refused_before_any_connection() -> None:
    job = make_definitions(CLOSED_RESOURCES).resolve_job_def("deprovision_client")
    for config in (
        {"client_id": "acme", "confirm": "acme2"},
        {"client_id": "Bad Id", "confirm": "Bad Id"},
    ):
        result = job.execute_in_process(
            instance=DagsterInstance.ephemeral(),
            run_config={"ops": {"deprovision": {"config": config}}},
            raise_on_error=False,
        )
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        message = failure.step_failure_data.error.message  # type: ignore[union-attr]
        assert "refused" in message and "Connection refused" not in message


def test_reconciliation_without_a_client_partition_is_refused_before_any_connection() -> None:
    closed = {
        "postgres": PostgresMetadataResource(host="127.0.0.1", port=9),
        "clickhouse": ClickHouseResource(host="127.0.0.1", http_port=9),
    }
    job = make_definitions(closed).resolve_job_def("reconcile_client")
    result = job.execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    data = failure.step_failure_data
    assert data is not None and data.user_failure_data is not None
    assert "launch it for the client's partition" in (data.user_failure_data.description or "")
    assert data.user_failure_data.metadata["refused"].value is True


# -- provisioning sensor plan ------------------------------------------------------------------


def states(mapping: dict[str, str]) -> Callable[[str], str]:
    return lambda key: mapping.get(key, "none")


def test_a_new_pending_client_is_requested_once() -> None:
    pending = [PendingClient("acme", "t1")]
    requests, state = plan_provisioning(pending, {}, states({}))
    assert requests == [("acme", Attempt("t1", 1))]
    assert Attempt("t1", 1).run_key("acme") == "provision:acme:t1:1"
    # Next tick: its run not created yet, or still running -> nothing.
    for key_state in ("none", "in_flight"):
        again, _ = plan_provisioning(pending, state, states({"provision:acme:t1:1": key_state}))
        assert again == []


def test_a_client_still_pending_after_its_run_finished_gets_a_bounded_new_attempt() -> None:
    pending = [PendingClient("acme", "t1")]
    state = {"acme": Attempt("t1", 1)}
    requests, state = plan_provisioning(pending, state, states({"provision:acme:t1:1": "finished"}))
    assert requests == [("acme", Attempt("t1", 2))]
    exhausted = {"acme": Attempt("t1", MAX_ATTEMPTS)}
    finished = states({Attempt("t1", MAX_ATTEMPTS).run_key("acme"): "finished"})
    assert plan_provisioning(pending, exhausted, finished)[0] == []


def test_a_client_sent_back_to_pending_starts_a_new_attempt_and_others_are_forgotten() -> None:
    previous = {"acme": Attempt("t1", 3), "gone": Attempt("t0", 1)}
    requests, state = plan_provisioning([PendingClient("acme", "t2")], previous, states({}))
    assert requests == [("acme", Attempt("t2", 1))]
    assert state == {"acme": Attempt("t2", 1)}


def test_cursor_round_trip_and_garbage() -> None:
    state = {"acme": Attempt("2024-01-01T00:00:00+00:00", 2)}
    raw = cursor.encode({"clients": attempts_to_cursor(state)})
    assert attempts_from_cursor(cursor.clients_state(raw)) == state
    for bad in (None, "", "not json", '{"v": 99, "clients": {}}', "[1, 2]"):
        assert cursor.decode(bad) == {} and cursor.clients_state(bad) == {}
    assert attempts_from_cursor({"acme": "bogus"}) == {}


# -- migrations sensor plan --------------------------------------------------------------------


def mf(version: int, sql: str) -> MigrationFile:
    return MigrationFile(version, f"m{version}", sql, checksum(sql.encode()))


def test_migration_target_changes_with_a_new_or_edited_file() -> None:
    base = [mf(0, "a"), mf(1, "b")]
    assert signature(base) == signature(list(reversed(base)))
    assert signature(base) != signature([*base, mf(2, "c")])
    assert signature(base) != signature([mf(0, "a"), mf(1, "b edited")])


def test_each_client_is_requested_once_per_target() -> None:
    requests, state = plan_migrations(["a", "b"], {}, "t1")
    assert (requests, state) == (["a", "b"], {"a": "t1", "b": "t1"})
    assert plan_migrations(["a", "b"], state, "t1")[0] == []
    assert plan_migrations(["a"], state, "t2") == (["a"], {"a": "t2"})


def test_migration_needs_say_why_and_heal_once_the_cause_is_fixed() -> None:
    pending = Plan((mf(2, "c"),))
    done = Plan(())
    refused = Refused(1, "version 1 (m1) was applied with checksum ...")
    states = [
        ClientSchemaState("new", pending),
        ClientSchemaState("tampered", refused),
        ClientSchemaState("old-view", done, view_stale=True),
        ClientSchemaState("was-red", done, last_attempt_failed=True),
        ClientSchemaState("fine", done),
    ]
    wanted = {n.client_id: n for n in needs(states, "sig")}
    assert set(wanted) == {"new", "tampered", "old-view", "was-red"}
    assert (wanted["new"].target, wanted["new"].why) == ("sig", "pending v002")
    assert wanted["tampered"].why.startswith("refused: version 1 (m1)")
    assert wanted["old-view"].target == "sig:view"
    assert wanted["was-red"].target == "sig:recover"
    targets = {n.client_id: n.target for n in wanted.values()}
    requested, state = plan_runs(targets, {})
    assert sorted(requested) == sorted(targets) and state == targets
    # Once per target: the next tick asks for nothing until something changes.
    assert plan_runs(targets, state)[0] == []
    assert plan_runs({**targets, "new": "sig2"}, state)[0] == ["new"]


def test_every_per_client_job_is_launched_for_a_client_partition() -> None:
    """The Jobs page offers the `clients` partition picker for every per-client job."""
    repo = make_definitions().get_repository_def()
    for name in (
        "provision_client",
        "migrate_client",
        "deprovision_client",
        "reconcile_client",
        "batch_load_clients",
        "move_client",
    ):
        partitions = repo.get_job(name).partitions_def
        assert isinstance(partitions, DynamicPartitionsDefinition), name
        assert partitions.name == "clients", name


def test_dagster_home_that_can_not_be_made_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert dagster_home.main(["--home", str(blocker / "home"), "--print-env"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot prepare DAGSTER_HOME:") and "choose --home" in err
