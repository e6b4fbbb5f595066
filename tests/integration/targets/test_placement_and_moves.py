"""Placement of clients on ClickHouse targets, lifecycle steps on a client's own target, and
client moves (copy, switch, fence, delta, verify, drop) with a SIGKILL mid-move, on two real
ClickHouse servers. Rows are written straight into the tables here; the router's side (a
move under load) is tested in test_target_faults.py."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from analytics_core import lifecycle, pg, registry
from analytics_core.batch.client_load import Broken, plan_client_load
from analytics_core.connections import open_connections
from analytics_core.event_contract import hash_api_key
from analytics_core.events_table import EVENT_COLUMNS
from analytics_core.migrations import files
from analytics_core.migrations.cluster_ddl import render
from analytics_core.migrations.files import split_statements
from analytics_core.moves import store
from analytics_core.moves.copy import FENCED_TABLE
from analytics_core.moves.plan import Step
from analytics_core.moves.run import Abandoned, Moved, MoveOptions, abandon_move, move_client
from analytics_core.ops_schema import ensure_ops_schema
from analytics_core.settings import REPO_ROOT, Settings
from analytics_core.trace.model import TraceReport
from analytics_core.trace.run import trace_event
from tests.conftest import unique_id, wait_for
from tests.integration.targets.conftest import TwoTargets

pytestmark = pytest.mark.integration


def _register(s: Settings, target: str, prefix: str = "pl") -> str:
    client_id = unique_id(prefix)
    conn = pg.connect(s.postgres)
    try:
        registry.add_client(
            conn,
            client_id,
            hash_api_key("k-" + client_id),
            ch_target=target,
            batch_source_url=str(s.state_dir / "landing" / client_id),
        )
    finally:
        conn.close()
    return client_id


def _active(t: TwoTargets, target: str, prefix: str = "pl") -> tuple[str, str]:
    client_id = _register(t.settings, target, prefix)
    with open_connections(t.settings) as c:
        done = lifecycle.provision(c, client_id)
    assert isinstance(done, lifecycle.Provisioned), done
    assert done.target == target
    return client_id, done.database


def _insert_events(t: TwoTargets, target: str, database: str, table: str, n: int) -> list[str]:
    """`n` events as the router writes them (distinct ids, spread over two days)."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    now = datetime.now(UTC)
    ch = t.ch(target)
    try:
        ch.insert(
            f"`{database}`.{table}",
            [
                [
                    uuid.UUID(i),
                    f"e{k % 3}",
                    now - timedelta(days=k % 2),
                    "u",
                    '{"url": "/p"}',
                    "shared_raw_events",
                    k % 6,
                    10_000 + k,
                    0,
                    k % 6,
                    10_000 + k,
                    0,
                    now,
                    now,
                    "test",
                ]
                for k, i in enumerate(ids)
            ],
            column_names=[c for c in EVENT_COLUMNS if c != "sent_at"],
        )
    finally:
        ch.close()
    return ids


def _audit(s: Settings, client_id: str) -> list[str]:
    conn = pg.connect(s.postgres)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT action FROM client_audit_log WHERE client_id = %s ORDER BY id",
                (client_id,),
            )
            return [str(r[0]) for r in cur.fetchall()]
    finally:
        conn.close()


@pytest.fixture
def registry_conn(two_targets: TwoTargets) -> Iterator[registry.Conn]:
    conn = pg.connect(two_targets.settings.postgres)
    yield conn
    conn.close()


# ---------------------------------------------------------------- placement


def test_add_client_places_by_fewest_clients_or_as_asked_and_refuses_unknown_targets(
    two_targets: TwoTargets, registry_conn: registry.Conn
) -> None:
    t = two_targets
    counts = registry.clients_per_target(registry_conn)
    fewest = min(["default", "ch2"], key=lambda name: counts.get(name, 0))
    auto = unique_id("place")
    added = t.admin("add-client", auto)
    assert added.returncode == 0, added.stderr
    assert f"on ClickHouse target {fewest} (fewest clients" in added.stdout
    row = registry.get_client(registry_conn, auto)
    assert row is not None and row.ch_target == fewest

    asked = unique_id("place")
    other = "ch2" if fewest == "default" else "default"
    added = t.admin("add-client", asked, "--target", other)
    assert added.returncode == 0, added.stderr
    assert f"on ClickHouse target {other} (requested)" in added.stdout
    row = registry.get_client(registry_conn, asked)
    assert row is not None and row.ch_target == other

    bad = unique_id("place")
    refused = t.admin("add-client", bad, "--target", "ch9")
    assert refused.returncode == 2
    assert "'ch9' is not configured (configured: default, ch2)" in refused.stderr
    assert registry.get_client(registry_conn, bad) is None

    listed = t.admin("targets")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert set(lines) == {"default", "ch2"}
    after = registry.clients_per_target(registry_conn)
    assert lines["ch2"].endswith(f"{after['ch2']} client(s)")

    # The registry refuses a target name that could never be configured.
    with pytest.raises(Exception, match="clients_ch_target_check"):
        registry.add_client(registry_conn, unique_id("place"), "0" * 64, ch_target="Bad-Name")
    registry_conn.rollback()


def test_a_client_on_the_second_target_lives_and_dies_there(two_targets: TwoTargets) -> None:
    t = two_targets
    client_id, database = _active(t, "ch2")
    assert t.has_database("ch2", database) and not t.has_database("default", database)
    with open_connections(t.settings) as c:
        migrated = lifecycle.migrate(c, client_id)
        assert isinstance(migrated, lifecycle.Migrated) and migrated.target == "ch2"
        # Trace finds its rows on ch2 and says so.
        [event_id] = _insert_events(t, "ch2", database, "events_base", 1)
        report = trace_event(c, event_id, client_id)
        assert isinstance(report, TraceReport) and [r.target for r in report.rows] == ["ch2"]
        gone = lifecycle.deprovision(c, client_id, client_id)
    assert isinstance(gone, lifecycle.Deprovisioned), gone
    assert gone.rows_before == {"events_base": 1}
    assert not t.has_database("ch2", database)


def test_a_target_missing_from_the_settings_is_an_error_that_names_it(
    two_targets: TwoTargets, stack: Settings
) -> None:
    """Settings without ch2 (a target removed by mistake): every step refuses the clients
    placed there, naming the target; none of them is served from `default` instead."""
    t = two_targets
    client_id, database = _active(t, "ch2")
    only_default = Settings.from_env(
        {k: v for k, v in t.env.items() if not k.startswith("CLICKHOUSE_CH2_")}
        | {"CLICKHOUSE_TARGETS": ""}
    )
    with open_connections(only_default) as c:
        for outcome in (
            lifecycle.migrate(c, client_id),
            lifecycle.deprovision(c, client_id, client_id),
            move_client(c, client_id, "default"),
        ):
            assert isinstance(outcome, lifecycle.StepFailed), outcome
            assert "'ch2' is not configured" in outcome.reason, outcome.reason
            assert outcome.refused
        plan = plan_client_load(c, client_id, working_dir=str(t.settings.state_dir))
        assert isinstance(plan, Broken) and "'ch2' is not configured" in plan.reason
    assert t.has_database("ch2", database) and not t.has_database("default", database)
    row = registry.get_client(pg.connect(t.settings.postgres), client_id)
    assert row is not None and row.ch_target == "ch2" and row.status == "active"


def test_cluster_ddl_is_valid_clickhouse_syntax(two_targets: TwoTargets) -> None:
    """What a cluster target would receive, parsed by ClickHouse's own parser (formatQuery):
    chdb-core runs no cluster, so the statements can not be executed here."""
    statements = [
        render(s, "client_acme", "analytics") for m in files.load() for s in split_statements(m.sql)
    ]
    ops = (REPO_ROOT / "clickhouse" / "ops" / "01_router_consumption.sql").read_text()
    statements += [render(s, "pipeline_ops", "analytics") for s in split_statements(ops)]
    statements += [
        render("CREATE DATABASE IF NOT EXISTS `client_acme`", "client_acme", "analytics"),
        render("DROP DATABASE IF EXISTS `client_acme` SYNC", "client_acme", "analytics"),
        render(f"RENAME TABLE events_base TO {FENCED_TABLE}", "client_acme", "analytics"),
    ]
    ch = two_targets.ch("default")
    try:
        for statement in statements:
            q = ch.query("SELECT formatQuery({q:String})", parameters={"q": statement})
            parsed = str(q.result_rows[0][0])
            assert "ON CLUSTER analytics" in parsed, parsed
        assert "ReplicatedReplacingMergeTree" in " ".join(statements)
    finally:
        ch.close()


# ---------------------------------------------------------------- moves


def test_a_move_survives_a_sigkill_after_the_switch_and_loses_and_duplicates_nothing(
    two_targets: TwoTargets, registry_conn: registry.Conn
) -> None:
    t = two_targets
    client_id, database = _active(t, "default", "mv")
    sent = _insert_events(t, "default", database, "events_base", 5_000)
    ch = t.ch("default")
    ch.command(
        f"CREATE TABLE `{database}`.users (user_id String, plan String)"
        " ENGINE = ReplacingMergeTree ORDER BY user_id"
    )
    ch.command(f"INSERT INTO `{database}`.users VALUES ('u1', 'free'), ('u2', 'pro')")
    ch.close()

    log = open(t.settings.state_dir.parent / f"move-{client_id}.log", "wb")  # noqa: SIM115
    mover = t.start_move(client_id, "ch2", 60, log)
    try:

        def at_switch() -> bool:
            move = store.open_move(registry_conn, client_id)
            return move is not None and move.step == Step.SWITCHED

        wait_for(at_switch, 120, what="the move to switch the registry")
        # A router that still had the old row writes before the fence: the delta finds it.
        late = _insert_events(t, "default", database, "events_base", 300)
        # Lifecycle steps keep away meanwhile (the mover holds the client's lock).
        with open_connections(t.settings) as c:
            busy = lifecycle.migrate(c, client_id)
        assert isinstance(busy, lifecycle.StepFailed) and busy.transient, busy
        os.kill(mover.pid, signal.SIGKILL)
        mover.wait(30)
    finally:
        if mover.poll() is None:
            mover.kill()
        log.close()

    move = store.open_move(registry_conn, client_id)
    assert move is not None and move.step == Step.SWITCHED
    row = registry.get_client(registry_conn, client_id)
    assert row is not None and row.ch_target == "ch2"
    assert t.has_database("default", database)
    with open_connections(t.settings) as c:
        # With the mover dead, steps refuse the client until its move is finished.
        refused = lifecycle.migrate(c, client_id)
        assert isinstance(refused, lifecycle.StepFailed) and refused.refused
        assert "is being moved from 'default' to 'ch2' (step switched)" in refused.reason
        again = move_client(c, client_id, "ch2")
    assert isinstance(again, Moved) and not again.already, again
    verified = again.counts["verified"]["events"]
    assert verified["source_rows"] == len(sent) + len(late)
    assert verified["missing_identities"] == 0
    assert again.counts["delta_rows"] + again.counts["late_delta_rows"] >= len(late)

    stored = t.event_ids("ch2", database)
    assert len(stored) == len(set(stored)) == len(sent) + len(late)
    assert set(stored) == set(sent) | set(late)
    assert t.scalar("ch2", f"SELECT count() FROM `{database}`.users") == 2
    assert t.scalar("ch2", f"SELECT count() FROM `{database}`.events") == len(stored)
    assert t.scalar("ch2", f"SELECT countIf(page_url = '/p') FROM `{database}`.events_base") == len(
        stored
    )
    assert not t.has_database("default", database)
    [done] = store.moves_of(registry_conn, client_id)
    assert done.step == Step.DONE and done.finished_at is not None and done.attempts == 2
    actions = _audit(t.settings, client_id)
    assert actions.index("move_started") < actions.index("move_switched") < actions.index("moved")

    # Done is done: the same request again changes nothing; moving back works the same way.
    with open_connections(t.settings) as c:
        same = move_client(c, client_id, "ch2")
        assert isinstance(same, Moved) and same.already
        back = move_client(c, client_id, "default", options=MoveOptions(grace_s=0))
    assert isinstance(back, Moved) and not back.already
    stored_back = t.event_ids("default", database)
    assert sorted(stored_back) == sorted(stored)
    assert not t.has_database("ch2", database)


def test_moves_that_can_not_be_done_are_refused_and_an_early_one_can_be_abandoned(
    two_targets: TwoTargets, registry_conn: registry.Conn
) -> None:
    t = two_targets
    pending = _register(t.settings, "default", "mvr")
    client_id, database = _active(t, "default", "mvr")
    with open_connections(t.settings) as c:
        not_active = move_client(c, pending, "ch2")
        assert isinstance(not_active, lifecycle.StepFailed) and not_active.refused
        assert "only active clients move" in not_active.reason
        unknown = move_client(c, client_id, "ch9")
        assert (
            isinstance(unknown, lifecycle.StepFailed)
            and "'ch9' is not configured" in unknown.reason
        )
        # An open move that has not switched: a half-made copy on ch2, then abandoned.
        move = store.start(
            c.registry, client_id, database, "default", "ch2", requested_by="t", run_id=None
        )
        c.clickhouse_for("ch2").command(f"CREATE DATABASE `{database}`")
        other = move_client(c, client_id, "default")
        assert isinstance(other, lifecycle.StepFailed)
        assert "unfinished move to 'ch2' (step started)" in other.reason
        dropped = abandon_move(c, client_id, actor="test")
    assert isinstance(dropped, Abandoned) and dropped.move_id == move.id
    assert not t.has_database("ch2", database) and t.has_database("default", database)
    assert store.open_move(registry_conn, client_id) is None
    row = registry.get_client(registry_conn, client_id)
    assert row is not None and row.ch_target == "default"
    assert "move_abandoned" in _audit(t.settings, client_id)
    refused = t.admin("move-client", pending, "--to", "ch2")
    assert refused.returncode == 2 and "only active clients move" in refused.stderr


def test_the_dagster_job_moves_a_client_launched_for_its_partition(
    two_targets: TwoTargets, registry_conn: registry.Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`move_client` as the UI launches it: for the client's partition, config = the target."""
    from dagster import DagsterInstance

    from analytics_pipeline.definitions import make_definitions
    from analytics_pipeline.resources import process_settings

    t = two_targets
    client_id, database = _active(t, "default", "mvd")
    sent = _insert_events(t, "default", database, "events_base", 200)
    for name, value in t.env.items():
        monkeypatch.setenv(name, value)
    process_settings.cache_clear()  # the resources read both targets from this environment
    try:
        instance = DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("clients", [client_id])
        job = make_definitions().resolve_job_def("move_client")
        result = job.execute_in_process(
            instance=instance,
            partition_key=client_id,
            run_config={"ops": {"move": {"config": {"target": "ch2", "grace_s": 0}}}},
            tags={"dagster/user": "ops@example.com"},
        )
    finally:
        process_settings.cache_clear()
    assert result.success
    [metadata] = [
        e.step_output_data.metadata  # type: ignore[union-attr]
        for e in result.all_events
        if e.is_successful_output
    ]
    assert metadata["to_target"].value == "ch2"
    assert metadata["from_target"].value == "default"
    assert sorted(t.event_ids("ch2", database)) == sorted(sent)
    assert not t.has_database("default", database)
    [done] = store.moves_of(registry_conn, client_id)
    assert done.step == Step.DONE and done.requested_by == "ops@example.com"
    assert done.dagster_run_id == result.run_id


def test_reconciliation_reads_accounting_on_default_and_rows_on_the_clients_target(
    two_targets: TwoTargets,
) -> None:
    """The same accounting and rows for a client on `default` (one ASOF join there) and one on
    ch2 (its ranges shipped to ch2 as an external table): the reports agree, and a row
    missing on ch2 is found missing."""
    from analytics_core.reconciliation.model import Report
    from analytics_core.reconciliation.run import ReconciliationOptions, reconcile_client

    t = two_targets
    here, here_db = _active(t, "default", "rc")
    there, there_db = _active(t, "ch2", "rc")
    group = unique_id("rc-group")
    hour = (int(time.time()) // 3600 - 2) * 3600  # a closed window, two hours ago
    received = datetime.fromtimestamp(hour + 60, UTC)
    ensure_ops_schema(t.settings)
    ops = t.ch("default")
    try:
        counts = {f"{here}|routed||{hour}": 10, f"{there}|routed||{hour}": 10}
        ops.insert(
            "pipeline_ops.router_consumption",
            [[group, "shared_raw_events", 0, 100, 110, 20, 20, counts, "test"]],
            column_names=[
                "consumer_group",
                "topic",
                "partition",
                "first_offset",
                "next_offset",
                "messages",
                "events",
                "counts",
                "router_instance",
            ],
        )
    finally:
        ops.close()
    for target, database in (("default", here_db), ("ch2", there_db)):
        ch = t.ch(target)
        try:
            ch.insert(
                f"`{database}`.events_base",
                [
                    [
                        uuid.uuid4(),
                        "e",
                        received,
                        "u",
                        "{}",
                        "shared_raw_events",
                        0,
                        100 + k,
                        0,
                        0,
                        100 + k,
                        0,
                        received,
                        received,
                        "test",
                    ]
                    for k in range(10)
                ],
                column_names=[c for c in EVENT_COLUMNS if c != "sent_at"],
            )
        finally:
            ch.close()
    opts = ReconciliationOptions(grace_s=0, lookback_hours=4, groups=(group,))

    def report(client_id: str) -> Report:
        with open_connections(t.settings) as c:
            found = reconcile_client(c, client_id, opts)
        assert isinstance(found, Report), found
        return found

    on_default, on_ch2 = report(here), report(there)
    assert on_default.passed and on_ch2.passed, (on_default.problems, on_ch2.problems)
    assert on_default.totals() == on_ch2.totals()
    assert on_ch2.totals()["rows_found"] == on_ch2.totals()["routed"] == 10

    ch2 = t.ch("ch2")
    try:
        ch2.command(f"DELETE FROM `{there_db}`.events_base WHERE kafka_offset = 105")
    finally:
        ch2.close()
    broken = report(there)
    assert not broken.passed and broken.totals()["missing"] == 1
