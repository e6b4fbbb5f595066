"""Router benchmark: the issue-14 targets, measured in one run on the real local stack.

For each client count (default 10 and 1000), on one fresh topic of --events events of
about 500 bytes:
1. router drain: the router from process start to the last row visible in ClickHouse
   (tables emptied, new consumer group): events/s, CPU per event (user + system CPU of
   the router process / events, its start-up measured apart and left out), peak RSS, and,
   on a local stack, the INSERTs and ClickHouse's CPU per event;
2. --before REF: the same drain with the router of git revision REF (`git archive`d to a
   temporary directory): the before figures, interleaved with the after ones;
3. baseline 1 (bench/baselines/minimal_loop.py, consume -> INSERT into one table, nothing
   else) on the same topic: the ratio router / baseline 1 of this very run;
4. steady load: a producer at --steady-fraction (0.5) of the router's drain rate for
   --steady-seconds (60): latency percentiles produce -> ingested_at (its INSERT's start)
   over the steady middle of the window (--steady-trim cut at each end), and the router's
   INSERT duration p99 (from its /metrics): produce -> visible <= their sum;
5. extras on request: --live (produce and route at once), --compare-accounting,
   --redis-outage, --alt-budget-mb, --connect (Kafka Connect sink), --profile DIR (py-spy
   flame graphs of the drains, SVG).
Then the targets with their ratios. The machine's load average is printed with each
phase: rates move with it, CPU per event much less.

Usage: .venv/bin/python -m bench.bench_router [--events 1000000] [--clients 10,1000]
       [--before REF] [--steady-seconds 60] [--profile bench/profiles] ...
       (prints its figures; about 15 minutes with the defaults)
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import NewTopic

from analytics_core import kafka_clients, lifecycle, pg, registry
from analytics_core.clickhouse import http_client
from analytics_core.connections import open_connections
from analytics_core.event_contract import hash_api_key
from analytics_core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"
PAD = 190  # ~500-byte events
DRAIN_TARGET = {10: 0.8, 1000: 0.6}  # router drain / baseline 1, by client count
RSS_TARGET_MIB = 512  # with 1000 clients, default budget
STEADY_P99_S = 2.0  # 10 clients; with 1000: the per-client wait + 1 s


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}/{fifteen:.1f}"


# ------------------------------------------------------------------ processes
def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def local_pids(settings: Settings) -> dict[str, int]:
    """Pids of the local stack's ClickHouse and Kafka (empty when not local)."""
    try:
        from devstack import api

        return {
            s.name: s.pid
            for s in api.status(settings)
            if s.pid and s.name in ("clickhouse", "kafka")
        }
    except Exception:  # not a devstack machine: the figures that need them say n/a
        return {}


class StackCpu:
    """CPU of the local ClickHouse and Kafka processes, and ClickHouse's INSERT count."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pids = local_pids(settings)
        self.start: dict[str, float] = {}

    def inserts(self) -> int:
        ch = http_client(self.settings.clickhouse)
        try:
            rows = ch.query("SELECT value FROM system.events WHERE event = 'InsertQuery'")
            return int(rows.result_rows[0][0]) if rows.result_rows else 0
        finally:
            ch.close()

    def begin(self) -> None:
        self.start = {name: proc_cpu_s(pid) for name, pid in self.pids.items()}
        self.start["inserts"] = self.inserts()

    def per_event(self, events: int) -> str:
        out = [f"{self.inserts() - int(self.start['inserts'])} INSERTs"]
        for name, pid in self.pids.items():
            try:
                used = proc_cpu_s(pid) - self.start[name]
            except OSError:
                continue
            out.append(f"{name} {used * 1e6 / events:.1f} us/ev")
        return ", ".join(out)


# ------------------------------------------------------------------ topic, clients, rows
def create_topic(settings: Settings, topic: str, partitions: int) -> None:
    admin = kafka_clients.admin(settings.kafka)
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(30)


def delete_topic(settings: Settings, topic: str) -> None:
    admin = kafka_clients.admin(settings.kafka)
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
    """When `count()` reached `expected`. Asked every 4 times as long as one count takes (a
    count over 1000 client tables costs ClickHouse 20-40 ms: a tight poll would steal the
    CPU being measured), at least every 0.25 s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        asked = time.monotonic()
        seen = count()
        now = time.monotonic()
        if seen >= expected:
            return now
        time.sleep(min(0.25, 4 * (now - asked)))
    raise SystemExit(f"timed out: {count()} of {expected} rows after {timeout_s}s")


def truncate(settings: Settings, clients: list[tuple[str, str]]) -> None:
    ch = http_client(settings.clickhouse)
    try:
        for _cid, db in clients:
            ch.command(f"TRUNCATE TABLE `{db}`.events_base")
    finally:
        ch.close()


def commit_group_at_end(settings: Settings, topic: str, group: str) -> None:
    """Make `group` start at the topic's current end (it skips the events already there)."""
    from confluent_kafka import TopicPartition

    c = kafka_clients.consumer(settings.kafka, group)
    try:
        tps = []
        for p in c.list_topics(topic, timeout=10).topics[topic].partitions:
            end = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            tps.append(TopicPartition(topic, p, end))
        c.commit(offsets=tps, asynchronous=False)
    finally:
        c.close()


def producer_cmd(
    clients: list[tuple[str, str]], events: int, *, rate: float = 0, prepare: bool = True
) -> list[str]:
    args = [sys.executable, "-m", "router.send_events", "--api-key", API_KEY]
    args += ["--count", str(events), "--pad", str(PAD), "--rate", str(rate)]
    if prepare:
        args.append("--prepare")
    for cid, _db in clients:
        args += ["--client-id", cid]
    return args


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mib(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f} MiB"


# ------------------------------------------------------------------ router runs
@dataclass
class Drain:
    label: str
    events: int
    seconds: float
    cpu_us: float | None = None  # router CPU per event, start-up left out
    rss_mib: float | None = None
    stack: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def line(self, n_clients: int, extra: str = "") -> str:
        cpu = "" if self.cpu_us is None else f"  CPU {self.cpu_us:5.1f} us/ev"
        return (
            f"{n_clients:>5} clients  {self.label:<38} {self.rate:>9,.0f} ev/s"
            f"  {self.seconds:6.1f}s{cpu}  peak RSS {mib(self.rss_mib)}"
            + (f"  [{self.stack}]" if self.stack else "")
            + extra
        )


@dataclass
class RouterCode:
    """Which router runs: this checkout, or another revision extracted to `cwd`."""

    label: str
    cwd: Path
    startup_cpu_s: float = 0.0
    profiles: list[Path] = field(default_factory=list)


def extract_revision(ref: str, into: Path) -> Path:
    """The router and the shared packages of git revision `ref`, under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "router", "analytics_core"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def start_router(code: RouterCode, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "router"],
        cwd=code.cwd,
        env=env,
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
    )


def measure_startup(code: RouterCode, settings: Settings, env: dict[str, str], topic: str) -> float:
    """CPU seconds a router spends starting and joining its group with nothing to read."""
    group = f"bench-router-idle-{uuid.uuid4().hex[:6]}"
    commit_group_at_end(settings, topic, group)
    proc = start_router(code, dict(env, ROUTER_GROUP_ID=group), Path(os.devnull))
    try:
        time.sleep(6)  # imports, connections, group join, first empty polls
        return proc_cpu_s(proc.pid)
    finally:
        stop(proc)


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else None


def drain(
    code: RouterCode,
    settings: Settings,
    env: dict[str, str],
    prefix: str,
    clients: list[tuple[str, str]],
    events: int,
    args: argparse.Namespace,
    tag: str,
    workdir: Path,
) -> Drain:
    truncate(settings, clients)
    stack = StackCpu(settings)
    stack.begin()
    env = dict(env, ROUTER_GROUP_ID=f"bench-router-{tag}-{uuid.uuid4().hex[:6]}")
    started = time.monotonic()
    proc = start_router(code, env, workdir / f"router-{tag}.log")
    spy = None
    if args.profile and py_spy():
        svg = Path(args.profile) / f"router-{tag}.svg"
        spy = subprocess.Popen(
            [py_spy() or "", "record", "-p", str(proc.pid), "-r", "100", "-o", str(svg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        code.profiles.append(svg)
    last = wait_rows(lambda: visible_rows(settings, prefix), events, args.timeout)
    cpu = proc_cpu_s(proc.pid) - code.startup_cpu_s
    rss = peak_rss_mib(proc.pid)
    stop(proc)
    if spy is not None:
        spy.wait(60)
    return Drain(
        code.label, events, last - started, cpu * 1e6 / events, rss, stack.per_event(events)
    )


# ------------------------------------------------------------------ steady load
@dataclass
class Steady:
    rate: float  # asked
    sent_rate: float  # what the producer achieved
    seconds: float
    p50: float
    p95: float
    p99: float  # produce -> ingested_at (INSERT start), ms
    insert_p99_s: float | None  # the router's INSERT duration p99 (histogram bucket bound)
    rss_mib: float | None

    @property
    def visible_p99_s(self) -> float:
        return self.p99 / 1000 + (self.insert_p99_s or 0.0)


def histogram_quantile(metrics: str, name: str, q: float) -> float | None:
    """The upper bound of the bucket holding quantile `q` of a Prometheus histogram."""
    buckets = []
    for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} ([0-9.e+]+)$', metrics, re.M):
        buckets.append((float(m.group(1)), float(m.group(2))))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return None


def steady(
    settings: Settings,
    env: dict[str, str],
    topic: str,
    prefix: str,
    clients: list[tuple[str, str]],
    rate: float,
    args: argparse.Namespace,
    workdir: Path,
) -> Steady:
    truncate(settings, clients)
    group = f"bench-router-steady-{uuid.uuid4().hex[:6]}"
    commit_group_at_end(settings, topic, group)
    port = free_port()
    proc = start_router(
        RouterCode("after", REPO),
        dict(env, ROUTER_GROUP_ID=group, ROUTER_METRICS_PORT=str(port)),
        workdir / f"router-steady-{len(clients)}.log",
    )
    time.sleep(3)  # joined and idle before the load starts
    n = int(rate * args.steady_seconds)
    t0 = time.time()
    out = subprocess.run(
        producer_cmd(clients, n, rate=rate, prepare=False),
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    t1 = time.time()
    wait_rows(lambda: visible_rows(settings, prefix), n, args.timeout)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    rss = peak_rss_mib(proc.pid)
    stop(proc)
    insert_p99 = histogram_quantile(metrics, "router_insert_seconds", 0.99)
    trim = (t1 - t0) * args.steady_trim
    lo, hi = int((t0 + trim) * 1000), int((t1 - trim) * 1000)
    ch = http_client(settings.clickhouse, timeout_s=300)
    try:
        row = ch.query(
            "SELECT quantilesExact(0.5, 0.95, 0.99)(dateDiff('millisecond', sent_at, ingested_at))"
            " FROM merge(REGEXP({r:String}), '^events_base$')"
            " WHERE toUnixTimestamp64Milli(sent_at) BETWEEN {lo:Int64} AND {hi:Int64}",
            parameters={"r": db_regex(prefix), "lo": lo, "hi": hi},
        ).result_rows[0][0]
    finally:
        ch.close()
    log(f"producer: {out.strip().splitlines()[-1] if out.strip() else '?'}")
    p50, p95, p99 = (float(x) for x in row)
    return Steady(rate, n / (t1 - t0), t1 - t0, p50, p95, p99, insert_p99, rss)


# ------------------------------------------------------------------ baseline 1
def baseline(settings: Settings, topic: str, events: int, args: argparse.Namespace) -> Drain:
    from bench.baselines import minimal_loop

    run_id = uuid.uuid4().hex[:6]
    table = f"bench.bench_minimal_{run_id}"
    ch = http_client(settings.clickhouse)
    ch.command("CREATE DATABASE IF NOT EXISTS bench")
    ch.close()
    minimal_loop.create_table(settings, table)
    stack = StackCpu(settings)
    stack.begin()
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "bench.baselines.minimal_loop", "--topic", topic),
            *("--group", f"bench-minimal-{run_id}", "--table", table, "--expected", str(events)),
        ],
        cwd=REPO,
    )

    def rows() -> int:
        c = http_client(settings.clickhouse)
        try:
            return int(c.query(f"SELECT count() FROM {table}").result_rows[0][0])
        finally:
            c.close()

    rss = cpu = None
    while proc.poll() is None and rows() < events:
        try:
            rss, cpu = peak_rss_mib(proc.pid) or rss, proc_cpu_s(proc.pid)
        except OSError:
            break
        time.sleep(0.05)
    last = wait_rows(rows, events, args.timeout)
    proc.wait(60)
    ch = http_client(settings.clickhouse)
    ch.command(f"DROP TABLE IF EXISTS {table}")
    ch.close()
    cpu_us = None if cpu is None else cpu * 1e6 / events  # start-up included
    return Drain(
        "baseline 1: minimal loop", events, last - started, cpu_us, rss, stack.per_event(events)
    )


# ------------------------------------------------------------------ one client count
@dataclass
class Result:
    clients: int
    lines: list[str] = field(default_factory=list)
    after: Drain | None = None
    before: Drain | None = None
    minimal: Drain | None = None
    steady: Steady | None = None


def bench_clients(
    settings: Settings,
    n_clients: int,
    events: int,
    args: argparse.Namespace,
    workdir: Path,
    codes: list[RouterCode],
) -> Result:
    res = Result(n_clients)
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
        ROUTER_INSTANCE_ID=f"bench-{run_id}",
    )
    if args.reconciliation_off:
        env["ROUTER_RECONCILIATION"] = "off"

    def add(line: str) -> None:
        res.lines.append(line)
        log(f"{line}   ({load_average()})")

    try:
        for code in codes:
            code.startup_cpu_s = measure_startup(code, settings, env, topic)
        if args.live:
            add(live_run(settings, env, prefix, clients, events, args, workdir, n_clients))
        else:
            subprocess.run(
                producer_cmd(clients, events),
                cwd=REPO,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        for code in codes:
            d = drain(
                code,
                settings,
                env,
                prefix,
                clients,
                events,
                args,
                f"{code.label}-{n_clients}",
                workdir,
            )
            if code.label == "after":
                res.after = d
                d.label = "router drain"
            else:
                res.before = d
                d.label = f"router drain, before ({args.before})"
            add(d.line(n_clients, f"  start-up {code.startup_cpu_s:.2f} s CPU (left out)"))
        assert res.after is not None
        res.minimal = baseline(settings, topic, events, args)
        add(
            res.minimal.line(
                n_clients, f"  -> router/minimal = {res.after.rate / res.minimal.rate:.2f}"
            )
        )

        def variant(label: str, **changes: str) -> Drain:
            """The router drain again, with other settings."""
            tag = f"{label.replace(' ', '-').replace(',', '')}-{n_clients}"
            again = RouterCode("after", REPO, codes[0].startup_cpu_s)
            d = drain(
                again, settings, dict(env, **changes), prefix, clients, events, args, tag, workdir
            )
            d.label = f"router drain, {label}"
            return d

        if args.alt_budget_mb and n_clients >= 100:
            alt = variant(
                f"{args.alt_budget_mb} MB budget", ROUTER_MAX_BUFFERED_MB=str(args.alt_budget_mb)
            )
            add(alt.line(n_clients))
        if args.compare_accounting:
            off = variant("accounting off", ROUTER_RECONCILIATION="off")
            add(off.line(n_clients, f"  -> accounting on/off = {res.after.rate / off.rate:.3f}"))
        if args.redis_outage:
            for label, port in redis_outages():
                down = variant(label, REDIS_PORT=str(port))
                add(down.line(n_clients, f"  -> Redis down/up = {down.rate / res.after.rate:.2f}"))
        if args.steady_seconds > 0:
            rate = res.after.rate * args.steady_fraction
            res.steady = s = steady(settings, env, topic, prefix, clients, rate, args, workdir)
            insert = "?" if s.insert_p99_s is None else f"{s.insert_p99_s:.3g} s"
            add(
                f"{n_clients:>5} clients  steady {s.rate:,.0f} ev/s asked, {s.sent_rate:,.0f} sent,"
                f" {s.seconds:.0f} s: produce -> ingested p50 {s.p50 / 1000:.2f} s, p95"
                f" {s.p95 / 1000:.2f} s, p99 {s.p99 / 1000:.2f} s; INSERT p99 <= {insert};"
                f" peak RSS {mib(s.rss_mib)}"
            )
        if args.connect:
            add(run_connect(settings, topic, run_id, n_clients, events, res.after, args, workdir))
    finally:
        if not args.keep:
            drop_clients(settings, clients)
            delete_topic(settings, topic)
    return res


def live_run(
    settings: Settings,
    env: dict[str, str],
    prefix: str,
    clients: list[tuple[str, str]],
    events: int,
    args: argparse.Namespace,
    workdir: Path,
    n_clients: int,
) -> str:
    """The producer and the router start together: produce -> last row visible."""
    router = start_router(
        RouterCode("after", REPO),
        dict(env, ROUTER_GROUP_ID=f"bench-router-live-{uuid.uuid4().hex[:6]}"),
        workdir / f"router-live-{n_clients}.log",
    )
    time.sleep(1.5)  # let it join the group; its start-up is not part of the figure
    producer = subprocess.Popen(
        producer_cmd(clients, events),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert producer.stdout is not None
    for line in producer.stdout:  # the clock starts when the messages are built
        if line.startswith(b"prepared "):
            break
    first = time.monotonic()
    last = wait_rows(lambda: visible_rows(settings, prefix), events, args.timeout)
    producer.communicate(timeout=120)
    rss = peak_rss_mib(router.pid)
    stop(router)
    live = Drain("router live (produce -> visible)", events, last - first, None, rss)
    return live.line(n_clients)


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
    drain: Drain,
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
        f"{n_clients:>5} clients  {'baseline 2: ClickHouse Kafka Connect sink':<38}"
        f" {res.events_per_s:>9,.0f} ev/s  {res.seconds:6.1f}s  peak RSS"
        f" {res.peak_rss_mib:.0f} MiB  -> router/connect = {drain.rate / res.events_per_s:.2f}"
    )


# ------------------------------------------------------------------ the targets
def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def targets(results: list[Result], wait_s: float) -> list[str]:
    out = []
    for r in results:
        if r.after is None or r.minimal is None:
            continue
        ratio = r.after.rate / r.minimal.rate
        want = DRAIN_TARGET.get(r.clients)
        goal = f"target >= {want}: {verdict(ratio >= want)}" if want else "no target"
        out.append(
            f"{r.clients:>5} clients  drain {r.after.rate:,.0f} / baseline 1 {r.minimal.rate:,.0f}"
            f" ev/s = {ratio:.2f} ({goal})"
        )
        if r.clients >= 1000:
            rss = r.after.rss_mib or 0.0
            out.append(
                f"{r.clients:>5} clients  router peak RSS {rss:.0f} MiB (target <= {RSS_TARGET_MIB}"
                f" MiB, default budget: {verdict(rss <= RSS_TARGET_MIB)})"
            )
        if r.steady is not None:
            limit = STEADY_P99_S if r.clients <= 10 else wait_s + 1.0
            p99 = r.steady.visible_p99_s
            out.append(
                f"{r.clients:>5} clients  steady {r.steady.sent_rate:,.0f} ev/s: p99 produce ->"
                f" visible <= {p99:.2f} s (target <= {limit:.1f} s: {verdict(p99 <= limit)})"
            )
        before = ""
        if r.before is not None and r.before.cpu_us is not None:
            gain = r.before.cpu_us / (r.after.cpu_us or 1.0)
            before = f", before {r.before.cpu_us:.1f} us/ev: {gain:.1f}x less"
        out.append(
            f"{r.clients:>5} clients  router CPU per event (user+sys, start-up left out):"
            f" {r.after.cpu_us:.1f} us/ev{before}"
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--clients", default="10,1000", help="comma-separated client counts")
    p.add_argument("--timeout", type=float, default=900.0, help="per-phase timeout (s)")
    p.add_argument(
        "--before",
        metavar="REF",
        help="also drain with the router of this git revision (e.g. 97e41a3): before/after",
    )
    p.add_argument("--steady-seconds", type=float, default=60.0, help="0 skips the steady load")
    p.add_argument(
        "--steady-fraction", type=float, default=0.5, help="steady rate / the drain's rate"
    )
    p.add_argument(
        "--steady-trim",
        type=float,
        default=0.15,
        help="fraction of the steady window left out at each end for the percentiles",
    )
    p.add_argument("--live", action="store_true", help="also produce and route at once")
    p.add_argument("--connect", action="store_true", help="also run the Kafka Connect baseline")
    p.add_argument(
        "--reconciliation-off",
        action="store_true",
        help="run the router with ROUTER_RECONCILIATION=off",
    )
    p.add_argument("--keep", action="store_true", help="keep bench clients and topics")
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
        default=0,
        help="with 100+ clients, also drain with ROUTER_MAX_BUFFERED_MB set to this",
    )
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="record py-spy flame graphs (SVG) of the drains into DIR (py-spy from the venv)",
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
    if not 0 < args.steady_fraction <= 1 or not 0 <= args.steady_trim < 0.5:
        p.error("--steady-fraction must be in (0, 1] and --steady-trim in [0, 0.5)")
    if args.profile:
        if py_spy() is None:
            p.error("--profile needs py-spy in the venv: run bin/setup (pyproject dev extra)")
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env()
    from router.config import RouterSettings

    wait_s = RouterSettings.from_env().client_max_wait_s
    workdir = settings.state_dir / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-router-before-") as tmp:
        codes = [RouterCode("after", REPO)]
        if args.before:
            codes.append(RouterCode("before", extract_revision(args.before, Path(tmp))))
        results = [bench_clients(settings, n, args.events, args, workdir, codes) for n in counts]
        profiles = [str(p) for code in codes for p in code.profiles]
    print(
        f"\n== router benchmark: {args.events:,} events of ~500 bytes, "
        f"{settings.kafka.topic_partitions} partitions, {os.cpu_count() or 0} cores, "
        f"{load_average()} =="
    )
    budget = os.environ.get("ROUTER_MAX_BUFFERED_MB", "default")
    print(f"router memory budget ROUTER_MAX_BUFFERED_MB={budget} unless the line says otherwise")
    for r in results:
        for line in r.lines:
            print(line)
    print("\n== targets (ratios from this run) ==")
    for line in targets(results, wait_s):
        print(line)
    if profiles:
        print("flame graphs: " + ", ".join(profiles))


if __name__ == "__main__":
    main()
