"""Fault tests of the two-target setup, with real services and a real router process:

- the `default` target (which also holds the router's accounting) is stopped for 60 s under
  load: its clients catch up afterwards with nothing lost or duplicated, and the clients on
  `ch2` keep being written within their normal flush meanwhile;
- a client is moved between targets under load, the move job is SIGKILLed after the switch
  and run again: the destination holds exactly the events sent, each once;
- a router that missed the move's invalidations meets the fence (its INSERT into the old
  table fails): it re-reads the client and writes the batch to the new target, with nothing
  dead-lettered, lost or duplicated.

Background merges are stopped on the clients' tables, so a duplicate row can not be merged
away before it is counted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from analytics_core import lifecycle, pg, registry
from analytics_core.client_cache import ClientDirectory
from analytics_core.clients import ClientStatus
from analytics_core.connections import open_connections
from analytics_core.event_contract import hash_api_key
from analytics_core.moves import store
from analytics_core.moves.plan import Step
from analytics_core.moves.run import Moved, MoveOptions, move_client
from analytics_core.reasons import Reason
from analytics_core.settings import REPO_ROOT, Settings
from devstack import api
from devstack.clickhouse import ClickHouseService
from router.config import RouterSettings
from router.service import Router
from tests.conftest import (
    ClientFixture,
    Kafka,
    event,
    free_port,
    fresh_group,
    router_env,
    set_status,
    unique_id,
    wait_for,
)
from tests.integration.router_support import end_offsets, letters_between, metric_values, metrics
from tests.integration.targets.conftest import TwoTargets
from tests.integration.test_kafka_cluster import SteadyProducer

pytestmark = pytest.mark.integration

OUTAGE_S = 60.0


def _client(t: TwoTargets, target: str, prefix: str) -> ClientFixture:
    client_id = unique_id(prefix)
    key = f"key-{client_id}"
    conn = pg.connect(t.settings.postgres)
    try:
        registry.add_client(conn, client_id, hash_api_key(key), ch_target=target)
    finally:
        conn.close()
    with open_connections(t.settings) as c:
        done = lifecycle.provision(c, client_id)
    assert isinstance(done, lifecycle.Provisioned) and done.target == target, done
    ch = t.ch(target)
    try:  # a duplicate must stay visible until it is counted
        ch.command(f"SYSTEM STOP MERGES `{done.database}`.events_base")
    finally:
        ch.close()
    return ClientFixture(client_id, key, done.database)


def _router_env(t: TwoTargets, group: str, **over: str) -> dict[str, str]:
    """The pair's environment with the test router settings (and `over`) on top: the shell's
    own ROUTER_* values (a private stack's metrics port) must not override them."""
    mine = router_env(group, **over)
    return {**t.env, **{k: v for k, v in mine.items() if k.startswith("ROUTER_")}}


@pytest.fixture
def router(
    two_targets: TwoTargets, stack: Settings, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start the real router (`python -m router`) on the two targets, in a fresh group."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**over: str) -> subprocess.Popen[bytes]:
        group = fresh_group(stack, "router-targets")
        env = _router_env(two_targets, group, **over)
        proc = subprocess.Popen(
            [sys.executable, "-m", "router"],
            cwd=REPO_ROOT,
            env=env,
            stdout=open(tmp_path / f"{group}.log", "ab"),  # noqa: SIM115 (the child owns it)
            stderr=subprocess.STDOUT,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _delays(t: TwoTargets, target: str, database: str, since: float, until: float) -> list[float]:
    """Seconds from `sent_at` to the INSERT (`ingested_at`) of the events sent in a window."""
    ch = t.ch(target)
    try:
        rows = ch.query(
            "SELECT dateDiff('millisecond', sent_at, ingested_at) / 1000"
            f" FROM `{database}`.events_base"
            " WHERE sent_at >= fromUnixTimestamp64Milli({a:Int64})"
            " AND sent_at < fromUnixTimestamp64Milli({b:Int64})",
            parameters={"a": int(since * 1000), "b": int(until * 1000)},
        ).result_rows
    finally:
        ch.close()
    return [float(r[0]) for r in rows]


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


def _landed_all(t: TwoTargets, placed: dict[str, tuple[str, ClientFixture]], sent: Any) -> bool:
    return all(
        len(t.event_ids(target, c.database)) >= len(sent.delivered.get(c.client_id, []))
        for target, c in placed.values()
    )


def _check_exact(
    t: TwoTargets, placed: dict[str, tuple[str, ClientFixture]], producer: SteadyProducer
) -> dict[str, dict[str, int]]:
    """Every client's table holds exactly its delivered event ids, each once."""
    figures: dict[str, dict[str, int]] = {}
    for target, c in placed.values():
        ids = t.event_ids(target, c.database)
        sent = set(producer.delivered.get(c.client_id, []))
        figures[c.client_id] = {"sent": len(sent), "rows": len(ids), "distinct": len(set(ids))}
        assert len(ids) == len(set(ids)), f"duplicate rows: {figures}"
        assert set(ids) == sent, (
            f"{c.client_id}: {len(sent - set(ids))} lost, {len(set(ids) - sent)} never sent"
        )
    return figures


@pytest.mark.timeout(420)
def test_a_target_down_for_60s_delays_only_its_own_clients(
    two_targets: TwoTargets, stack: Settings, router: Callable[..., subprocess.Popen[bytes]]
) -> None:
    t = two_targets
    placed = {}
    for target in ("default", "ch2"):
        for _ in range(2):
            c = _client(t, target, "down")
            placed[c.client_id] = (target, c)
    clients = [c for _t, c in placed.values()]
    on_ch2 = [c for target, c in placed.values() if target == "ch2"]
    letters_from = end_offsets(stack, stack.kafka.dead_letter_topic)
    port = free_port()
    proc = router(ROUTER_METRICS_PORT=str(port))
    producer = SteadyProducer(
        stack.kafka.bootstrap_servers, stack.kafka.raw_topic, clients, rate=120.0
    )
    figures: dict[str, Any] = {}
    # The `default` server alone (its instance name, "clickhouse", also names the family:
    # stopping by name would stop ch2's server too).
    server = ClickHouseService(
        t.settings,
        t.options,
        next(
            s
            for s in api.topology(t.settings, options=t.options).clickhouse
            if s.target == "default"
        ),
    )
    try:
        producer.start()
        wait_for(
            lambda: all(t.event_ids(target, c.database) for target, c in placed.values()),
            90,
            what="rows of every client on both targets",
        )
        baseline_from = time.time()
        time.sleep(5)
        assert server.stop(), "the default target's server was not running"
        stopped = time.time()
        baseline = [
            d for c in on_ch2 for d in _delays(t, "ch2", c.database, baseline_from, stopped)
        ]
        # The router says which target is down (its /metrics).
        wait_for(
            lambda: (
                metric_values(metrics(port), "router_clickhouse_target_up")
                == {'{target="ch2"}': 1.0, '{target="default"}': 0.0}
            ),
            30,
            what="router_clickhouse_target_up: default 0, ch2 1",
        )
        time.sleep(max(0.0, OUTAGE_S - (time.time() - stopped)))
        # Measured while `default` is still down: ch2's rows are written meanwhile.
        during = [
            d for c in on_ch2 for d in _delays(t, "ch2", c.database, stopped + 2, time.time() - 2)
        ]
        api.start_service(t.settings, "clickhouse", options=t.options)  # ch2's is adopted
        restarted = time.time()
        time.sleep(3)  # some traffic with the target back
    finally:
        producer.finish()
    assert not producer.failures, producer.failures[:5]
    wait_for(lambda: _landed_all(t, placed, producer), 180, what="every client caught up")
    caught_up_s = time.time() - restarted
    time.sleep(2)  # a late duplicate would land now
    figures["clients"] = _check_exact(t, placed, producer)
    figures["catch_up_s"] = round(caught_up_s, 1)
    figures["ch2_p99_before_s"] = round(_p99(baseline), 2)
    figures["ch2_p99_during_s"] = round(_p99(during), 2)
    figures["ch2_rows_during"] = len(during)
    print(f"target-down figures: {figures}")
    # The other target's clients: written during the outage, within their normal flush.
    assert len(during) >= 0.8 * (120 / 2) * (OUTAGE_S - 4), figures  # half of 120 ev/s
    assert _p99(during) <= max(5.0, 3 * _p99(baseline)), figures
    letters = letters_between(
        stack, letters_from, end_offsets(stack, stack.kafka.dead_letter_topic)
    )
    mine = {c.client_id for c in clients}
    assert [x for x, _v in letters if x.client_id in mine] == []
    assert proc.poll() is None, "the router exited"


@pytest.mark.timeout(300)
def test_a_move_under_load_killed_after_the_switch_loses_and_duplicates_nothing(
    two_targets: TwoTargets,
    stack: Settings,
    router: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    t = two_targets
    mover, stays = _client(t, "default", "mover"), _client(t, "default", "stays")
    letters_from = end_offsets(stack, stack.kafka.dead_letter_topic)
    proc = router()
    producer = SteadyProducer(
        stack.kafka.bootstrap_servers, stack.kafka.raw_topic, [mover, stays], rate=150.0
    )
    conn = pg.connect(t.settings.postgres)
    log = tmp_path / "move.log"
    try:
        producer.start()
        wait_for(lambda: t.event_ids("default", mover.database), 90, what="the mover's first rows")
        time.sleep(3)
        with log.open("wb") as out:
            job = t.start_move(mover.client_id, "ch2", 30, out)

            def switched() -> bool:
                move = store.open_move(conn, mover.client_id)
                return move is not None and move.step == Step.SWITCHED

            wait_for(switched, 120, what="the move's switch")
            time.sleep(2)  # routers follow the switch; the job waits out its grace
            os.kill(job.pid, signal.SIGKILL)
            job.wait(30)
        assert job.returncode == -signal.SIGKILL, log.read_text()
        time.sleep(3)  # events keep flowing to the new target meanwhile
        again = t.admin("move-client", mover.client_id, "--to", "ch2", "--grace-s", "0")
        assert again.returncode == 0, again.stderr
        time.sleep(3)
    finally:
        producer.finish()
        conn.close()
    assert not producer.failures, producer.failures[:5]
    placed = {mover.client_id: ("ch2", mover), stays.client_id: ("default", stays)}
    wait_for(lambda: _landed_all(t, placed, producer), 120, what="every event in its table")
    time.sleep(2)
    figures = _check_exact(t, placed, producer)
    print(f"move-under-load figures: {figures}; {again.stdout.strip()}")
    assert not t.has_database("default", mover.database)
    letters = letters_between(
        stack, letters_from, end_offsets(stack, stack.kafka.dead_letter_topic)
    )
    assert [x for x, _v in letters if x.client_id in (mover.client_id, stays.client_id)] == []
    assert proc.poll() is None, "the router exited"


class _DeafDirectory(ClientDirectory):
    """The real client lookup (Redis, PostgreSQL) of a router that misses invalidations (its
    pub/sub connection lost) and keeps entries for an hour: it learns of a move only when
    the old target refuses its batch."""

    def start_invalidation_listener(self) -> None:
        return None


@pytest.mark.timeout(240)
def test_a_router_that_missed_the_move_sends_the_fenced_batch_to_the_new_target(
    two_targets: TwoTargets, stack: Settings
) -> None:
    t = two_targets
    mover, stays = _client(t, "default", "deaf"), _client(t, "ch2", "deaf")
    letters_from = end_offsets(stack, stack.kafka.dead_letter_topic)
    group = fresh_group(stack, "router-deaf")
    rs = RouterSettings.from_env(_router_env(t, group, ROUTER_CACHE_LOCAL_TTL_S="3600"))
    deaf = _DeafDirectory(rs.common.redis, rs.common.postgres, local_ttl_s=3600)
    router = Router(rs, directory=deaf)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            router.run()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    producer = SteadyProducer(
        stack.kafka.bootstrap_servers, stack.kafka.raw_topic, [mover, stays], rate=100.0
    )
    try:
        producer.start()
        wait_for(lambda: t.event_ids("default", mover.database), 90, what="the mover's first rows")
        with open_connections(t.settings) as c:
            moved = move_client(c, mover.client_id, "ch2", options=MoveOptions(grace_s=1.0))
        assert isinstance(moved, Moved), moved
        redirected = router.metrics.retries.labels(kind="moved")
        wait_for(lambda: redirected._value.get() >= 1, 60, what="a batch redirected to ch2")
        time.sleep(2)  # events keep flowing to the new target
    finally:
        producer.finish()
    assert not producer.failures, producer.failures[:5]
    placed = {mover.client_id: ("ch2", mover), stays.client_id: ("ch2", stays)}
    try:
        wait_for(lambda: _landed_all(t, placed, producer), 120, what="every event in its table")
        time.sleep(2)  # a late duplicate would land now
        figures = _check_exact(t, placed, producer)
    finally:
        router.stop_event.set()
        thread.join(60)
    print(f"deaf-router move figures: {figures}; {moved.counts}")
    assert not errors and not thread.is_alive(), errors
    assert not t.has_database("default", mover.database)
    letters = letters_between(
        stack, letters_from, end_offsets(stack, stack.kafka.dead_letter_topic)
    )
    assert [x for x, _v in letters if x.client_id in (mover.client_id, stays.client_id)] == []


@pytest.mark.timeout(180)
def test_a_client_on_a_target_the_router_does_not_configure_is_dead_lettered_naming_it(
    two_targets: TwoTargets,
    stack: Settings,
    kafka: Kafka,
    router: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """A misconfiguration, not an outage: the rows are refused like a broken database's
    (retried, the client read again each time), then dead-lettered `destination_error`
    with a detail that says what to configure; the other clients keep flowing."""
    t = two_targets
    lost_id, key = unique_id("ch9"), "key-ch9"
    conn = pg.connect(t.settings.postgres)
    try:
        registry.add_client(
            conn,
            lost_id,
            hash_api_key(key),
            status=ClientStatus.ACTIVE,
            ch_database_name=f"client_{lost_id.replace('-', '_')}",
            ch_target="ch9",
        )
    finally:
        conn.close()
    lost = ClientFixture(lost_id, key, f"client_{lost_id.replace('-', '_')}")
    try:
        fine = _client(t, "ch2", "ch9ok")
        since = kafka.end_offsets(stack.kafka.dead_letter_topic)
        proc = router(
            ROUTER_DESTINATION_MAX_ATTEMPTS="2",
            ROUTER_RETRY_BACKOFF_MS="100",
            ROUTER_RETRY_BACKOFF_MAX_MS="200",
        )
        kafka.send_events(
            [event(lost, n=n) for n in range(3)] + [event(fine, n=n) for n in range(3)]
        )
        letters = kafka.read_dead_letters(
            since, lambda letter, _v: letter.client_id == lost_id, expect=3, timeout_s=90
        )
    finally:  # no client left on an unconfigured target (`admin targets` fails on one)
        set_status(t.settings, lost_id, ClientStatus.DEPROVISIONED)
    assert len(letters) == 3, letters
    for letter, _value in letters:
        assert letter.reason is Reason.DESTINATION_ERROR
        assert "'ch9'" in letter.detail and "CLICKHOUSE_TARGETS" in letter.detail
    wait_for(lambda: len(t.event_ids("ch2", fine.database)) == 3, 60, what="ch2's client rows")
    assert proc.poll() is None, "the router exited"
