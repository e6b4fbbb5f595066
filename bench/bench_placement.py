"""Placement benchmark: N clients on one ClickHouse target against N/2 + N/2 on two, same run.

Needs the two-target local stack:
    DEVSTACK_CLICKHOUSE_SERVERS=2 .venv/bin/python -m devstack up
    eval "$(.venv/bin/python -m devstack env)"

For each layout, on a topic of its own preloaded with the same number of ~500-byte events
spread evenly over the clients:
1. the router drains the topic (one process, defaults): events / (last row visible - start);
2. CPU seconds over the drain of the router and of each ClickHouse server (utime + stime of
   their processes, from /proc; devstack knows the pids), and per server the INSERT
   statements it ran and the parts it created (ClickHouse's own counters, system.events);
3. derived: router events per CPU-second, INSERTs/s per server, ClickHouse CPU-ms per INSERT.

Usage: .venv/bin/python -m bench.bench_placement [--clients 1000] [--events 500000]
       (prints its figures; takes minutes: provisioning 1000 client databases is part of it,
       but not of the figures)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from analytics_core import lifecycle, pg, registry
from analytics_core.clickhouse import http_client
from analytics_core.connections import open_connections
from analytics_core.event_contract import hash_api_key
from analytics_core.settings import DEFAULT_TARGET, Settings
from bench.bench_router import (
    API_KEY,
    PAD,
    RouterCode,
    create_topic,
    delete_topic,
    log,
    peak_rss_mib,
    producer_cmd,
    start_router,
    stop,
    wait_rows,
)
from devstack import api

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def server_pids(settings: Settings) -> dict[str, int]:
    """The pid of each local ClickHouse server by target (devstack's status)."""
    by_name = {s.target: s.name for s in api.topology(settings).clickhouse}
    pids = {r.name: r.pid for r in api.status(settings)}
    out = {}
    for target, name in by_name.items():
        pid = pids.get(name)
        if pid is None:
            raise SystemExit(f"ClickHouse server {name} (target {target}) is not running here")
        out[target] = pid
    return out


def server_counters(settings: Settings, target: str) -> dict[str, int]:
    ch = http_client(settings.clickhouse_targets()[target])
    try:
        rows = ch.query(
            "SELECT event, value FROM system.events WHERE event IN"
            " ('InsertQuery', 'InsertedRows', 'MergeTreeDataWriterBlocks')"
        ).result_rows
    finally:
        ch.close()
    return {str(k): int(v) for k, v in rows}


@dataclass
class Layout:
    label: str
    placement: dict[str, int]  # target -> clients
    clients: list[tuple[str, str, str]] = field(default_factory=list)  # (id, database, target)


def provision(settings: Settings, prefix: str, layout: Layout) -> None:
    specs = [
        (f"{prefix}-{target}-{i}", target)
        for target, n in layout.placement.items()
        for i in range(n)
    ]
    conn = pg.connect(settings.postgres)
    try:
        for cid, target in specs:
            registry.add_client(conn, cid, hash_api_key(API_KEY), ch_target=target)
    finally:
        conn.close()

    def one(spec: tuple[str, str]) -> tuple[str, str, str]:
        cid, target = spec
        with open_connections(settings) as c:
            done = lifecycle.provision(c, cid)
        assert isinstance(done, lifecycle.Provisioned), done
        return cid, done.database, target

    with ThreadPoolExecutor(4) as pool:
        layout.clients = list(pool.map(one, specs))


def drop(settings: Settings, layout: Layout) -> None:
    def one(cid: str) -> None:
        with open_connections(settings) as c:
            lifecycle.deprovision(c, cid, cid, actor="bench")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, [c for c, _db, _t in layout.clients]))


def visible(settings: Settings, prefix: str, targets: list[str]) -> int:
    total = 0
    regex = "^client_" + prefix.replace("-", "_") + "_"
    for target in targets:
        ch = http_client(settings.clickhouse_targets()[target])
        try:
            total += int(
                ch.query(
                    "SELECT sum(total_rows) FROM system.tables WHERE match(database, {r:String})"
                    " AND name = 'events_base'",
                    parameters={"r": regex},
                ).result_rows[0][0]
                or 0
            )
        finally:
            ch.close()
    return total


def run_layout(
    settings: Settings, layout: Layout, events: int, timeout: float, workdir: Path
) -> list[str]:
    run_id = uuid.uuid4().hex[:6]
    prefix = f"bpl{run_id}"
    topic = f"bench_placement_{run_id}"
    targets = sorted(layout.placement)
    log(f"{layout.label}: provisioning {sum(layout.placement.values())} clients...")
    t0 = time.monotonic()
    provision(settings, prefix, layout)
    log(f"{layout.label}: provisioned in {time.monotonic() - t0:.0f}s; preloading {events} events")
    create_topic(settings, topic, settings.kafka.topic_partitions)
    env = dict(
        os.environ,
        KAFKA_RAW_TOPIC=topic,
        ROUTER_METRICS_PORT="0",
        LOG_LEVEL="WARNING",
        ROUTER_GROUP_ID=f"bench-placement-{run_id}",
        ROUTER_INSTANCE_ID=f"bench-placement-{run_id}",
    )
    lines: list[str] = []
    try:
        subprocess.run(
            producer_cmd([(c, db) for c, db, _t in layout.clients], events),
            cwd=REPO,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        pids = server_pids(settings)
        before_cpu = {t: cpu_seconds(pids[t]) for t in targets}
        before = {t: server_counters(settings, t) for t in targets}
        started = time.monotonic()
        router = start_router(
            RouterCode("placement", REPO), env, workdir / f"router-placement-{run_id}.log"
        )
        last = wait_rows(lambda: visible(settings, prefix, targets), events, timeout)
        router_cpu = cpu_seconds(router.pid)
        rss = peak_rss_mib(router.pid)
        seconds = last - started
        after_cpu = {t: cpu_seconds(pids[t]) for t in targets}
        after = {t: server_counters(settings, t) for t in targets}
        stop(router)
        lines.append(
            f"{layout.label:<28} {events / seconds:>9.0f} ev/s  {seconds:6.1f}s  router"
            f" {router_cpu:6.1f} CPU-s ({events / router_cpu:,.0f} ev per CPU-s),"
            f" peak RSS {rss or 0:.0f} MiB"
        )
        for t in targets:
            inserts = after[t].get("InsertQuery", 0) - before[t].get("InsertQuery", 0)
            parts = after[t].get("MergeTreeDataWriterBlocks", 0) - before[t].get(
                "MergeTreeDataWriterBlocks", 0
            )
            cpu = after_cpu[t] - before_cpu[t]
            per_insert = f"{1000 * cpu / inserts:.1f}" if inserts else "-"
            lines.append(
                f"  target {t:<8} {layout.placement[t]:>5} clients: ClickHouse {cpu:6.1f} CPU-s"
                f" ({100 * cpu / seconds:.0f}% of a core), {inserts} INSERTs"
                f" ({inserts / seconds:.0f}/s), {parts} parts, {per_insert} CPU-ms per INSERT"
            )
        for line in lines:
            log(line)
    finally:
        delete_topic(settings, topic)
        drop(settings, layout)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clients", type=int, default=1000, help="clients per layout (even)")
    p.add_argument("--events", type=int, default=500_000, help="events per layout")
    p.add_argument("--timeout", type=float, default=900.0, help="per-drain timeout (s)")
    p.add_argument("--second-target", default="ch2", help="the other target of the split layout")
    args = p.parse_args()
    if args.clients < 2 or args.clients % 2 or args.events <= 0:
        p.error("--clients must be an even number >= 2 and --events positive")
    settings = Settings.from_env()
    if args.second_target not in settings.clickhouse_targets():
        sys.exit(
            f"target {args.second_target!r} is not configured (CLICKHOUSE_TARGETS): run "
            "DEVSTACK_CLICKHOUSE_SERVERS=2 .venv/bin/python -m devstack up, then "
            'eval "$(.venv/bin/python -m devstack env)"'
        )
    workdir = settings.state_dir / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    half = args.clients // 2
    layouts = [
        Layout(f"{args.clients} clients on 1 target", {DEFAULT_TARGET: args.clients}),
        Layout(f"{half} + {half} on 2 targets", {DEFAULT_TARGET: half, args.second_target: half}),
    ]
    lines: list[str] = []
    for layout in layouts:
        lines += run_layout(settings, layout, args.events, args.timeout, workdir)
    print(
        f"\n== placement benchmark: {args.events} events of ~{PAD + 310} bytes per layout, "
        f"{settings.kafka.topic_partitions} partitions, {os.cpu_count() or 0} cores, "
        "one router, every server on this machine =="
    )
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
