"""Router benchmark: throughput, latency and memory, with baselines, on the real local stack.

For each client count (default 10 and 1000), on one fresh topic:
1. live run: the producer and the router start together; end-to-end throughput is
   events / (last row visible in ClickHouse - first produce), latency percentiles are
   `ingested_at - sent_at` per row, and the router's peak RSS is read from /proc;
2. drain runs on the now-full topic, each from process start to last row visible:
   the router again (tables emptied first, new consumer group), baseline (1) the
   minimal consume -> insert loop, and baseline (2) ClickHouse's Kafka Connect sink
   (when bench/baselines/kafka_connect_sink.py can run it); with 100+ clients the router
   also drains once more with another memory budget (--alt-budget-mb);
3. the ratios router/baseline.

Usage: .venv/bin/python -m bench.bench_router [--events 1000000] [--clients 10,1000]
       [--no-connect] [--reconciliation-off] [--redis-outage]
       (prints its figures; takes minutes)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from analytics_core import lifecycle, pg, registry
from analytics_core.clickhouse import http_client
from analytics_core.connections import open_connections
from analytics_core.event_contract import hash_api_key
from analytics_core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"
PAD = 190  # ~500-byte events


@dataclass
class Run:
    label: str
    events: int
    seconds: float
    peak_rss_mib: float | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def create_topic(settings: Settings, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(30)


def delete_topic(settings: Settings, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for f in admin.delete_topics([topic]).values():
        try:
            f.result(30)
        except Exception as exc:
            log(f"could not delete topic {topic}: {exc}")


def make_clients(settings: Settings, prefix: str, n: int) -> list[tuple[str, str]]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    conn = pg.connect(settings.postgres)
    try:
        for cid in ids:
            registry.add_client(conn, cid, hash_api_key(API_KEY))
    finally:
        conn.close()

    def provision(cid: str) -> tuple[str, str]:
        with open_connections(settings) as connections:
            outcome = lifecycle.provision(connections, cid)
        assert isinstance(outcome, lifecycle.Provisioned), outcome
        return cid, outcome.database

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(provision, ids))


def drop_clients(settings: Settings, clients: list[tuple[str, str]]) -> None:
    def drop(cid: str) -> None:
        with open_connections(settings) as connections:
            lifecycle.deprovision(connections, cid, cid, actor="bench")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(drop, [c for c, _ in clients]))


def db_regex(prefix: str) -> str:
    return "^client_" + prefix.replace("-", "_") + "_"


def visible_rows(settings: Settings, prefix: str) -> int:
    ch = http_client(settings.clickhouse)
    try:
        return int(
            ch.query(
                "SELECT sum(total_rows) FROM system.tables WHERE match(database, {r:String})"
                " AND name = 'events_base'",
                parameters={"r": db_regex(prefix)},
            ).result_rows[0][0]
            or 0
        )
    finally:
        ch.close()


def wait_rows(count: Callable[[], int], expected: int, timeout_s: float) -> float:
    """When `count()` reached `expected`. A count over 1000 client tables costs ClickHouse
    20-40 ms, so it is asked every 0.5 s until 98% are there (a tight poll would steal
    the CPU being measured), then every 50 ms."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = count()
        if seen >= expected:
            return time.monotonic()
        time.sleep(0.05 if seen >= 0.98 * expected else 0.5)
    raise SystemExit(f"timed out: {count()} of {expected} rows after {timeout_s}s")


def latency_percentiles(settings: Settings, prefix: str) -> tuple[float, float, float]:
    ch = http_client(settings.clickhouse, timeout_s=300)
    try:
        row = ch.query(
            "SELECT quantilesExact(0.5, 0.95, 0.99)(dateDiff('millisecond', sent_at, ingested_at))"
            " FROM merge(REGEXP({r:String}), '^events_base$')",
            parameters={"r": db_regex(prefix)},
        ).result_rows[0][0]
        return float(row[0]), float(row[1]), float(row[2])
    finally:
        ch.close()


def commit_group_at_end(settings: Settings, topic: str, group: str) -> None:
    """Make `group` start at the topic's current end (it skips the preloaded events)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    try:
        tps = []
        for p in c.list_topics(topic, timeout=10).topics[topic].partitions:
            end = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            tps.append(TopicPartition(topic, p, end))
        c.commit(offsets=tps, asynchronous=False)
    finally:
        c.close()


def truncate(settings: Settings, clients: list[tuple[str, str]]) -> None:
    ch = http_client(settings.clickhouse)
    try:
        for _cid, db in clients:
            ch.command(f"TRUNCATE TABLE `{db}`.events_base")
    finally:
        ch.close()


def mib(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f} MiB"


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def start_router(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "router"],
        cwd=REPO,
        env=env,
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def producer_cmd(
    topic_env: dict[str, str], clients: list[tuple[str, str]], events: int, rate: float = 0
) -> list[str]:
    args = [
        sys.executable,
        "-m",
        "router.send_events",
        "--api-key",
        API_KEY,
        "--count",
        str(events),
        "--pad",
        str(PAD),
        "--prepare",
        "--rate",
        str(rate),
    ]
    for cid, _db in clients:
        args += ["--client-id", cid]
    return args


def bench_clients(
    settings: Settings, n_clients: int, events: int, args: argparse.Namespace, workdir: Path
) -> list[str]:
    run_id = uuid.uuid4().hex[:6]
    prefix = f"bench{run_id}-c{n_clients}"
    topic = f"bench_raw_{run_id}_{n_clients}"
    log(f"{n_clients} clients, {events} events: topic {topic}, provisioning clients...")
    create_topic(settings, topic, settings.kafka.topic_partitions)
    t = time.monotonic()
    clients = make_clients(settings, prefix, n_clients)
    log(f"provisioned {n_clients} client databases in {time.monotonic() - t:.1f}s")
    env = dict(
        os.environ,
        KAFKA_RAW_TOPIC=topic,
        ROUTER_METRICS_PORT="0",
        LOG_LEVEL="WARNING",
        ROUTER_GROUP_ID=f"bench-router-{run_id}",
        ROUTER_INSTANCE_ID=f"bench-{run_id}",
    )
    if args.reconciliation_off:
        env["ROUTER_RECONCILIATION"] = "off"
    results: list[str] = []
    try:
        # 1. live run
        router = start_router(env, workdir / f"router-{n_clients}.log")
        time.sleep(1.5)  # let it join the group; its start-up is not part of the figure
        producer = subprocess.Popen(
            producer_cmd(env, clients, events),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert producer.stdout is not None
        # The clock starts when the producer starts sending (messages are built before).
        for line in producer.stdout:
            if line.startswith(b"prepared "):
                break
        first_produce = time.monotonic()
        last = wait_rows(lambda: visible_rows(settings, prefix), events, args.timeout)
        out = producer.communicate(timeout=120)[0].decode().strip().splitlines()
        rss = peak_rss_mib(router.pid)
        stop(router)
        live = Run("router live (produce -> visible)", events, last - first_produce, rss)
        p50, p95, p99 = latency_percentiles(settings, prefix)
        results.append(
            f"{n_clients:>5} clients  {live.label:<36} {live.rate:>9.0f} ev/s"
            f"  {live.seconds:6.1f}s  router peak RSS {mib(rss)}"
        )
        results.append(
            f"{n_clients:>5} clients  flood latency (mostly queueing) p50 {p50:.0f} ms,"
            f" p95 {p95:.0f} ms, p99 {p99:.0f} ms   producer: {out[-1] if out else '?'}"
        )
        log(results[-2])
        log(results[-1])

        # 2a. router drain
        truncate(settings, clients)
        env_drain = dict(env, ROUTER_GROUP_ID=f"bench-router-drain-{run_id}")
        started = time.monotonic()
        router = start_router(env_drain, workdir / f"router-drain-{n_clients}.log")
        last = wait_rows(lambda: visible_rows(settings, prefix), events, args.timeout)
        rss = peak_rss_mib(router.pid)
        stop(router)
        drain = Run("router drain", events, last - started, rss)
        results.append(
            f"{n_clients:>5} clients  {drain.label:<36} {drain.rate:>9.0f} ev/s"
            f"  {drain.seconds:6.1f}s  peak RSS {mib(rss)}"
        )
        log(results[-1])

        # 2a'. many clients: the same drain with another memory budget (the budget sets
        # the rows per INSERT per client database; see README, delivery guarantee)
        if args.alt_budget_mb and n_clients >= 100:
            truncate(settings, clients)
            env_alt = dict(
                env,
                ROUTER_GROUP_ID=f"bench-router-drain-alt-{run_id}",
                ROUTER_MAX_BUFFERED_MB=str(args.alt_budget_mb),
            )
            started = time.monotonic()
            router = start_router(env_alt, workdir / f"router-drain-alt-{n_clients}.log")
            last = wait_rows(lambda: visible_rows(settings, prefix), events, args.timeout)
            rss = peak_rss_mib(router.pid)
            stop(router)
            alt = Run(f"router drain, {args.alt_budget_mb} MB budget", events, last - started, rss)
            results.append(
                f"{n_clients:>5} clients  {alt.label:<36} {alt.rate:>9.0f} ev/s"
                f"  {alt.seconds:6.1f}s  peak RSS {mib(rss)}"
            )
            log(results[-1])

        # 2a''. Redis down: refused (nothing listens) and hung (connections accepted, never
        # answered): bounded calls and the circuit breaker keep the drain near its speed.
        if args.redis_outage:
            for label, port in redis_outages():
                truncate(settings, clients)
                env_down = dict(
                    env,
                    ROUTER_GROUP_ID=f"bench-router-drain-{label.replace(' ', '-')}-{run_id}",
                    REDIS_PORT=str(port),
                )
                started = time.monotonic()
                router = start_router(env_down, workdir / f"router-{label}-{n_clients}.log")
                last = wait_rows(lambda: visible_rows(settings, prefix), events, args.timeout)
                stop(router)
                down = Run(f"router drain, {label}", events, last - started)
                results.append(
                    f"{n_clients:>5} clients  {down.label:<36} {down.rate:>9.0f} ev/s"
                    f"  {down.seconds:6.1f}s  -> Redis down/up = {down.rate / drain.rate:.2f}"
                )
                log(results[-1])

        # 2a+. the same drain with router accounting off: the cost of reconciliation
        if args.compare_accounting:
            truncate(settings, clients)
            env_off = dict(
                env, ROUTER_GROUP_ID=f"bench-router-drain-off-{run_id}", ROUTER_RECONCILIATION="off"
            )
            started = time.monotonic()
            router = start_router(env_off, workdir / f"router-drain-off-{n_clients}.log")
            last = wait_rows(lambda: visible_rows(settings, prefix), events, args.timeout)
            stop(router)
            off = Run("router drain, accounting off", events, last - started)
            results.append(
                f"{n_clients:>5} clients  {off.label:<36} {off.rate:>9.0f} ev/s"
                f"  {off.seconds:6.1f}s  -> accounting on/off = {drain.rate / off.rate:.3f}"
            )
            log(results[-1])

        # 2a'. steady load below capacity: latency as a user would see it
        if args.latency_rate > 0:
            truncate(settings, clients)
            steady_n = int(args.latency_rate * args.latency_seconds)
            env_steady = dict(env, ROUTER_GROUP_ID=f"bench-router-steady-{run_id}")
            commit_group_at_end(settings, topic, env_steady["ROUTER_GROUP_ID"])
            router = start_router(env_steady, workdir / f"router-steady-{n_clients}.log")
            time.sleep(2)
            subprocess.run(
                producer_cmd(env, clients, steady_n, args.latency_rate),
                cwd=REPO,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            wait_rows(lambda: visible_rows(settings, prefix), steady_n, args.timeout)
            stop(router)
            p50, p95, p99 = latency_percentiles(settings, prefix)
            results.append(
                f"{n_clients:>5} clients  steady {args.latency_rate:.0f} ev/s for"
                f" {args.latency_seconds:.0f}s: latency produce -> ingested p50 {p50:.0f} ms,"
                f" p95 {p95:.0f} ms, p99 {p99:.0f} ms"
            )
            log(results[-1])
            truncate(settings, clients)

        # 2b. baseline (1)
        from bench.baselines import minimal_loop

        table = f"bench_minimal_{run_id}_{n_clients}"
        ch = http_client(settings.clickhouse)
        ch.command("CREATE DATABASE IF NOT EXISTS bench")
        ch.close()
        minimal_loop.create_table(settings, f"bench.{table}")
        started = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.baselines.minimal_loop",
                "--topic",
                topic,
                "--group",
                f"bench-minimal-{run_id}",
                "--table",
                f"bench.{table}",
                "--expected",
                str(events),
            ],
            cwd=REPO,
            env=env,
        )

        def minimal_rows() -> int:
            c = http_client(settings.clickhouse)
            try:
                return int(c.query(f"SELECT count() FROM bench.{table}").result_rows[0][0])
            finally:
                c.close()

        rss = None
        while proc.poll() is None and minimal_rows() < events:
            rss = peak_rss_mib(proc.pid) or rss
            time.sleep(0.05)
        last = wait_rows(minimal_rows, events, args.timeout)
        proc.wait(60)
        minimal = Run("baseline 1: minimal loop", events, last - started, rss)
        results.append(
            f"{n_clients:>5} clients  {minimal.label:<36} {minimal.rate:>9.0f} ev/s"
            f"  {minimal.seconds:6.1f}s  peak RSS {mib(rss)}"
            f"  -> router/minimal = {drain.rate / minimal.rate:.2f}"
        )
        log(results[-1])

        # 2c. baseline (2)
        if not args.no_connect:
            results.append(
                run_connect(settings, topic, run_id, n_clients, events, drain, args, workdir)
            )
            log(results[-1])
    finally:
        if not args.keep:
            drop_clients(settings, clients)
            delete_topic(settings, topic)
    return results


def redis_outages() -> list[tuple[str, int]]:
    """Two ways Redis is down: a port nothing listens on (refused at once), and a socket
    that accepts connections and never answers (every call waits for its timeout)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        refused = int(probe.getsockname()[1])
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(1024)  # never accept()ed: the kernel completes connections, nobody answers
    _HUNG_SOCKETS.append(hung)
    return [("redis refused", refused), ("redis hung", int(hung.getsockname()[1]))]


_HUNG_SOCKETS: list[object] = []


def run_connect(
    settings: Settings,
    topic: str,
    run_id: str,
    n_clients: int,
    events: int,
    drain: Run,
    args: argparse.Namespace,
    workdir: Path,
) -> str:
    try:
        from bench.baselines import kafka_connect_sink as sink
    except ImportError as exc:
        return f"{n_clients:>5} clients  baseline 2: Kafka Connect sink unavailable: {exc}"
    table = f"bench_connect_{run_id}_{n_clients}"
    try:
        sink.create_table(settings, "bench", table)
        res = sink.run_sink(
            settings,
            topic=topic,
            database="bench",
            table=table,
            expected_rows=events,
            timeout_s=args.timeout,
            group_id=f"bench-connect-{run_id}",
            log_dir=workdir,
        )
    except Exception as exc:
        return f"{n_clients:>5} clients  baseline 2: Kafka Connect sink failed: {exc}"
    if res.error:
        return f"{n_clients:>5} clients  baseline 2: Kafka Connect sink failed: {res.error}"
    return (
        f"{n_clients:>5} clients  {'baseline 2: ClickHouse Kafka Connect sink':<36}"
        f" {res.events_per_s:>9.0f} ev/s  {res.seconds:6.1f}s  peak RSS"
        f" {res.peak_rss_mib:.0f} MiB  -> router/connect = {drain.rate / res.events_per_s:.2f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--clients", default="10,1000", help="comma-separated client counts")
    p.add_argument("--timeout", type=float, default=900.0, help="per-phase timeout (s)")
    p.add_argument("--no-connect", action="store_true", help="skip the Kafka Connect baseline")
    p.add_argument(
        "--reconciliation-off",
        action="store_true",
        help="run the router with ROUTER_RECONCILIATION=off",
    )
    p.add_argument("--keep", action="store_true", help="keep bench clients and topics")
    p.add_argument(
        "--latency-rate",
        type=float,
        default=10_000,
        help="steady-load phase rate for latency percentiles (0 skips it)",
    )
    p.add_argument("--latency-seconds", type=float, default=20.0)
    p.add_argument(
        "--compare-accounting",
        action="store_true",
        help="also drain with ROUTER_RECONCILIATION=off and print the on/off ratio",
    )
    p.add_argument(
        "--redis-outage",
        action="store_true",
        help="also drain with Redis refused and hung, and print the down/up throughput ratio",
    )
    p.add_argument(
        "--alt-budget-mb",
        type=int,
        default=512,
        help="with 100+ clients, also drain with ROUTER_MAX_BUFFERED_MB set to this (0 skips)",
    )
    args = p.parse_args()
    try:
        counts = [int(x) for x in args.clients.split(",") if x]
    except ValueError:
        p.error("--clients takes comma-separated integers, e.g. 10,1000")
    if args.events <= 0 or not counts or min(counts) <= 0:
        p.error("--events and --clients must be positive")
    if args.alt_budget_mb < 0:
        p.error("--alt-budget-mb must be 0 (skip) or a size in MB")
    settings = Settings.from_env()
    workdir = settings.state_dir / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for n in counts:
        lines += bench_clients(settings, n, args.events, args, workdir)
    print(
        f"\n== router benchmark: {args.events} events of ~500 bytes, "
        f"{settings.kafka.topic_partitions} partitions, {os.cpu_count() or 0} cores =="
    )
    budget = os.environ.get("ROUTER_MAX_BUFFERED_MB", "1024 (default)")
    print(f"router memory budget ROUTER_MAX_BUFFERED_MB={budget} unless the line says otherwise")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
