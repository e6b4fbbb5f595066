"""Capture service benchmark: throughput, latency, quotas under a flood, memory under overload.

Driven by load generators not written here: `wrk` (closed loop: the maximum rate) and
`vegeta` (open loop at a fixed rate: latency at half of the maximum). On the local stack,
to a topic of its own (`bench_capture_raw`, so no router ever reads these events):

1. HTTP server candidates, each serving the same minimal handler (read the body, parse
   the JSON, answer): granian, uvicorn (httptools + uvloop), aiohttp (uvloop);
2. the request path alone, in process (bench/capture_request_path.py): CPU per event
   without HTTP and Kafka;
3. batches of 1 and 50 events, for 1 and 100 clients: the capture service (`python -m
   capture`) and, before each, the bare HTTP -> Kafka handler (bench/baselines/
   bare_http_kafka.py) with the same clients (it keys by the Authorization header, so its
   messages spread over partitions as capture's do): events/s at the maximum and the CPU
   the server used per event,
   `--repeat` times, then p50/p95/p99 of acknowledged requests at half of the capture
   service's (median) maximum rate, for the capture service and the bare handler alike,
   after `WARMUP_S` seconds at that rate (reported apart: they hold the clients' first
   lookups);
4. one client flooding far over its quota while ten others send at a fixed rate: the
   others' latency and success with and without the flood;
5. overload (1000 connections of 50-event batches): peak RSS of the service.

The machine's load average is printed with every run: on a shared machine the rates move
with it, the CPU per event much less.

Usage: .venv/bin/python -m bench.bench_capture [--duration 10] [--connections 512]
       [--repeat 3] [--skip-servers]   (prints its figures; about 10 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import NewTopic

from analytics_core import kafka_clients, pg, registry
from analytics_core.event_contract import hash_api_key
from analytics_core.quotas import set_quota
from analytics_core.settings import Settings
from bench.capture_bodies import CLIENTS, NOISY, basic, body_of, client_id, key_of
from bench.capture_request_path import measure as measure_request_path

REPO = Path(__file__).resolve().parents[1]
TOPIC = "bench_capture_raw"
# Latency runs start with this many seconds at their rate, reported apart: the first
# lookups of clients whose verdicts expired since the maximum-rate runs are a start-up cost
# (one registry thread), not the steady state the p99 target is about.
WARMUP_S = 3
VEGETA_HINT = (
    "run bin/setup (bin/setup.d/40-capture.sh builds vegeta v12.12.0 into "
    "~/.cache/analytics-pipeline/bin), or go install github.com/tsenart/vegeta/v12@v12.12.0"
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


WRK_LUA = """
local keys = {%(keys)s}
local body = [==[%(body)s]==]
local counter = 0
local tid = 0
local threads = {}
setup = function(thread)
  tid = tid + 1
  thread:set("tid", tid)
  table.insert(threads, thread)
end
request = function()
  counter = counter + 1
  local seq = "%(run)s-" .. tostring(tid) .. "-" .. tostring(counter)
  local b = string.gsub(body, "@SEQ@", seq)
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Authorization"] = keys[(counter %% #keys) + 1]
  return wrk.format("POST", "%(path)s", headers, b)
end
done = function(summary, latency, requests)
  io.write(string.format(
    "WRK_JSON {\\"requests\\":%%d,\\"duration_us\\":%%d,\\"non2xx\\":%%d,\\"socket_errors\\":%%d,"
    .. "\\"p50_us\\":%%d,\\"p95_us\\":%%d,\\"p99_us\\":%%d}\\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


@dataclass
class Load:
    requests: int
    seconds: float
    non2xx: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    batch: int

    @property
    def rps(self) -> float:
        return (self.requests - self.non2xx) / self.seconds

    @property
    def eps(self) -> float:
        return self.rps * self.batch


def run_wrk(
    url: str, path: str, batch: int, keys: list[str], *, duration: int, connections: int
) -> Load:
    body = body_of(batch).decode()
    script = WRK_LUA % {
        # Message ids unique to this wrk run: the service remembers the ids of recent
        # writes (restart and retry memory) and would take a repeated body for an SDK retry.
        "run": uuid.uuid4().hex[:12],
        "keys": ",".join(json.dumps(k) for k in keys),
        "body": body,
        "path": path,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{duration}s",
                "--timeout",
                "30s",
                "-s",
                f.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=duration + 60,
        )
    finally:
        os.unlink(f.name)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out.stdout}\n{out.stderr}")
    d = json.loads(line[len("WRK_JSON ") :])
    return Load(
        d["requests"],
        d["duration_us"] / 1e6,
        d["non2xx"],
        d["socket_errors"],
        d["p50_us"] / 1000,
        d["p95_us"] / 1000,
        d["p99_us"] / 1000,
        batch,
    )


def vegeta_bin() -> str | None:
    for candidate in (
        shutil.which("vegeta"),
        str(Path.home() / ".cache" / "analytics-pipeline" / "bin" / "vegeta"),
        str(Path.home() / "go" / "bin" / "vegeta"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def run_vegeta(
    vegeta: str,
    url: str,
    path: str,
    batch: int,
    clients: list[str],
    *,
    rate: int,
    duration: int,
    workdir: Path,
    tag: str,
) -> Load:
    """Open loop at `rate` requests/s; distinct bodies so no two requests repeat events."""
    targets = []
    run = uuid.uuid4().hex[:12]  # ids unique to this run (see WRK_LUA's)
    for n in range(min(2000, max(200, rate * 2))):
        cid = clients[n % len(clients)]
        body_path = workdir / f"{tag}-{n}.json"
        body_path.write_bytes(body_of(batch, f"{run}-{tag}-{n}"))
        targets.append(
            f"POST {url}{path}\nContent-Type: application/json\nAuthorization: {basic(cid)}\n"
            f"@{body_path}\n"
        )
    targets_path = workdir / f"{tag}.targets"
    targets_path.write_text("\n".join(targets))
    attack = subprocess.run(
        [
            vegeta,
            "attack",
            f"-rate={rate}/s",
            f"-duration={duration}s",
            "-timeout=30s",
            "-max-workers=2000",
            f"-targets={targets_path}",
        ],
        capture_output=True,
        timeout=duration + 120,
    )
    report = subprocess.run(
        [vegeta, "report", "-type=json"], input=attack.stdout, capture_output=True, timeout=120
    )
    d = json.loads(report.stdout)
    lat = d["latencies"]
    ok = d["status_codes"].get("200", 0)
    total = d["requests"]
    return Load(
        total,
        d["duration"] / 1e9,
        total - ok,
        0,
        lat["50th"] / 1e6,
        lat["95th"] / 1e6,
        lat["99th"] / 1e6,
        batch,
    )


# -- processes ----------------------------------------------------------------------------
class Server:
    def __init__(self, args: list[str], env: dict[str, str], port: int, ready: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115  # lives as long as the server
            prefix="bench-capture-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{args} exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + ready, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{args} not ready: {Path(self.log.name).read_text()[-2000:]}")

    def pids(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "-g", str(self.proc.pid)], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]

    def cpu_seconds(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def rss_mib(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if not self.log.closed:  # stop() may be called twice (early, then in `finally`)
            self.log.close()
            os.unlink(self.log.name)


def service_env(settings: Settings, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CAPTURE_PORT": str(port), "KAFKA_RAW_TOPIC": TOPIC, "LOG_LEVEL": "WARNING"})
    return env


# -- minimal handlers for the server comparison ---------------------------------------------
MINIMAL_OK = b'{"success":true}'


async def minimal_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the body, parse the JSON, answer: the part every candidate server must carry."""
    import orjson

    from bench.baselines.bare_http_kafka import read_body

    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/healthz":
        body = b"ok"
    else:
        orjson.loads(await read_body(receive))
        body = MINIMAL_OK
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve_minimal(server: str, port: int) -> None:
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(
            "bench.bench_capture:minimal_asgi",
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
            lifespan="on",
        )
    elif server == "granian":
        from granian.constants import HTTPModes, Interfaces, Loops
        from granian.server.mp import MPServer

        MPServer(
            "bench.bench_capture:minimal_asgi",
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            workers=1,
            loop=Loops.uvloop,
            http=HTTPModes.http1,
            websockets=False,
            log_enabled=False,
        ).serve()
    else:
        import orjson
        import uvloop
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            orjson.loads(await request.read())
            return web.Response(body=MINIMAL_OK, content_type="application/json")

        async def health(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_post("/v1/batch", handle)
        app.router.add_get("/healthz", health)
        web.run_app(
            app,
            host="127.0.0.1",
            port=port,
            access_log=None,
            print=None,
            loop=uvloop.new_event_loop(),
        )


# -- the benchmark ----------------------------------------------------------------------------
def prepare(settings: Settings) -> None:
    admin = kafka_clients.admin(settings.kafka)
    if TOPIC not in admin.list_topics(timeout=10).topics:
        for fut in admin.create_topics(
            [NewTopic(TOPIC, num_partitions=6, replication_factor=1)]
        ).values():
            fut.result(30)
    conn = pg.connect(settings.postgres)
    try:
        registry.apply_metadata_schema(conn)
        for cid in [client_id(i) for i in range(CLIENTS)] + [NOISY]:
            registry.add_client(conn, cid, hash_api_key(key_of(cid)), name="capture benchmark")
            registry.set_api_key_hash(conn, cid, hash_api_key(key_of(cid)))
            if cid == NOISY:
                set_quota(conn, cid, 1000.0, 2000)
            else:
                set_quota(conn, cid, 1e9, 1_000_000_000)
    finally:
        conn.close()


def fmt_load(label: str, load: Load, extra: str = "") -> str:
    return (
        f"{label:<44} {load.eps:>10,.0f} ev/s {load.rps:>8,.0f} req/s  "
        f"p50 {load.p50_ms:6.1f}  p95 {load.p95_ms:6.1f}  p99 {load.p99_ms:6.1f} ms  "
        f"non-2xx {load.non2xx}{extra}"
    )


def load_average() -> str:
    return "load average {:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())


def measured(server: Server, url: str, batch: int, keys: list[str], d: int, c: int) -> Run:
    """One closed-loop run, with the CPU the server's processes used for it."""
    cpu0 = server.cpu_seconds()
    load = run_wrk(url, "/v1/batch", batch, keys, duration=d, connections=c)
    cpu = server.cpu_seconds() - cpu0
    return Run(load, cpu * 1e6 / max(1, load.requests * batch), os.getloadavg()[0])


@dataclass
class Run:
    load: Load
    cpu_us_per_event: float  # all threads of the server's processes
    load_average: float

    def text(self, label: str, extra: str = "") -> str:
        return fmt_load(
            label,
            self.load,
            f"  server CPU {self.cpu_us_per_event:6.1f} us/event  load {self.load_average:4.1f}"
            + extra,
        )


def median_load(runs: list[Run]) -> Load:
    """The run with the median rate (the half-rate latency runs start from it)."""
    return sorted((r.load for r in runs), key=lambda load: load.eps)[len(runs) // 2]


def span(values: list[float], fmt: str = "{:,.0f}") -> str:
    low, high = min(values), max(values)
    return (
        fmt.format(low)
        if fmt.format(low) == fmt.format(high)
        else f"{fmt.format(low)}-{fmt.format(high)}"
    )


def compare_servers(duration: int, connections: int) -> list[str]:
    lines = ["", "HTTP server candidates (same minimal handler: read body, parse JSON, answer):"]
    for server in ("granian", "uvicorn", "aiohttp"):
        port = free_port()
        proc = Server(
            [
                sys.executable,
                "-m",
                "bench.bench_capture",
                "--serve-minimal",
                server,
                "--port",
                str(port),
            ],
            dict(os.environ),
            port,
            "/healthz",
        )
        try:
            for batch in (1, 50):
                cpu0 = proc.cpu_seconds()
                load = run_wrk(
                    proc.url,
                    "/v1/batch",
                    batch,
                    ["none"],
                    duration=duration,
                    connections=connections,
                )
                cpu = proc.cpu_seconds() - cpu0
                per_k = 1000 * cpu / max(1, load.requests)
                lines.append(
                    fmt_load(
                        f"  {server}, batch {batch}", load, f"  server CPU {per_k:.2f} s/1000 req"
                    )
                )
                log(lines[-1])
        finally:
            proc.stop()
    return lines


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_capture",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=positive, default=10, help="seconds per load run")
    parser.add_argument(
        "--connections",
        type=positive,
        default=512,
        help="wrk connections for the maximum rate (default 512: with batches of 1 the bare "
        "handler's rate still grew from 64 to 256 to 512 connections, 12 600 -> 19 900 -> "
        "22 700 requests/s, as each connection waits for Kafka's acknowledgement)",
    )
    parser.add_argument("--skip-servers", action="store_true", help="skip the server comparison")
    parser.add_argument(
        "--repeat",
        type=positive,
        default=3,
        help="maximum-rate runs per configuration, bare and capture alternating (default 3)",
    )
    parser.add_argument(
        "--serve-minimal", choices=["granian", "uvicorn", "aiohttp"], help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_minimal:
        serve_minimal(args.serve_minimal, args.port)
        return 0
    if shutil.which("wrk") is None:
        print("bench_capture: wrk not found; run bin/setup (apt-get install wrk)", file=sys.stderr)
        return 2
    vegeta = vegeta_bin()
    if vegeta is None:
        print(f"bench_capture: vegeta not found; install it: {VEGETA_HINT}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    prepare(settings)
    d, c = args.duration, args.connections
    report = [
        f"capture benchmark, {os.cpu_count()} cores, {d} s per run, wrk -c{c}, "
        f"{args.repeat} repetition(s); at start: {load_average()}"
    ]
    if not args.skip_servers:
        report += compare_servers(d, c)

    report += ["", "Request path alone (in process, no HTTP server, no Kafka), CPU per event:"]
    for native in (True, False):
        for batch, requests in ((1, 4096), (50, 512)):
            path = measure_request_path(batch, requests, native=native)
            report.append(
                f"  {'compiled' if native else 'Python'} mapping, batch {batch:>2}: "
                f"handler {path['handler']:6.2f} us/event, "
                f"with the ASGI app {path['app']:6.2f} us/event "
                f"({path['app'] * batch:,.0f} us/request)"
            )
            log(report[-1])

    one = [basic(client_id(0))]
    hundred = [basic(client_id(i)) for i in range(CLIENTS)]
    runs: dict[tuple[str, int, int], list[Run]] = {}
    bare_port, cap_port = free_port(), free_port()
    bare = Server(
        [sys.executable, "-m", "bench.baselines.bare_http_kafka"],
        service_env(settings, bare_port),
        bare_port,
        "/",
    )
    cap = Server(
        [sys.executable, "-m", "capture"], service_env(settings, cap_port), cap_port, "/readyz"
    )
    report += [
        "",
        "Maximum rate (wrk, closed loop), acknowledged by Kafka (acks=all); bare and capture "
        "alternate:",
    ]
    try:
        for rep in range(args.repeat):
            for batch in (1, 50):
                for n, keys in ((1, one), (CLIENTS, hundred)):
                    # The bare handler keys each request by its Authorization header, so
                    # with n clients its messages spread over partitions as capture's do.
                    base = measured(bare, bare.url, batch, keys, d, c)
                    runs.setdefault(("bare", batch, n), []).append(base)
                    report.append(base.text(f"  bare HTTP->Kafka, batch {batch}, {n} client(s)"))
                    log(report[-1])
                    run = measured(cap, cap.url, batch, keys, d, c)
                    runs.setdefault(("capture", batch, n), []).append(run)
                    ratio = run.load.eps / base.load.eps
                    label = f"  capture, batch {batch}, {n} client(s)"
                    report.append(run.text(label, f"  = {ratio:.2f} x bare"))
                    log(report[-1])
            if rep + 1 < args.repeat:
                report.append("")
        report += ["", "Summary of the maximum-rate runs (ranges over the repetitions):"]
        for batch in (1, 50):
            for n in (1, CLIENTS):
                bare_runs = runs[("bare", batch, n)]
                report.append(
                    f"  batch {batch:>2}, bare,    {n:>3} client(s): "
                    f"{span([r.load.eps for r in bare_runs]):>15} ev/s, server CPU "
                    f"{span([r.cpu_us_per_event for r in bare_runs], '{:.1f}')} us/event"
                )
                cap_runs = runs[("capture", batch, n)]
                ratios = [r.load.eps / b.load.eps for r, b in zip(cap_runs, bare_runs, strict=True)]
                report.append(
                    f"  batch {batch:>2}, capture, {n:>3} client(s): "
                    f"{span([r.load.eps for r in cap_runs]):>15} ev/s = "
                    f"{span(ratios, '{:.2f}')} x bare, server CPU "
                    f"{span([r.cpu_us_per_event for r in cap_runs], '{:.1f}')} us/event"
                )
        log("\n".join(report[-8:]))
        maxima = {key: median_load(rs) for key, rs in runs.items()}

        report += [
            "",
            "Latency at half of the capture service's maximum (vegeta, open loop), and the bare "
            f"handler's at the same rate; measured after {WARMUP_S} s at that rate (whose p99 is "
            "in brackets: the clients' verdicts and quotas have expired since the maximum-rate "
            "runs, so it includes their first lookups):",
        ]
        with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
            work = Path(tmp)
            for batch in (1, 50):
                for n in (1, CLIENTS):
                    rate = max(1, int(maxima[("capture", batch, n)].rps / 2))
                    clients = [client_id(i) for i in range(n)]
                    for name, server in (("capture", cap), ("bare HTTP->Kafka", bare)):
                        warm, steady = (
                            run_vegeta(
                                vegeta,
                                server.url,
                                "/v1/batch",
                                batch,
                                clients,
                                rate=rate,
                                duration=seconds,
                                workdir=work,
                                tag=f"half-{name[:4]}-{batch}-{n}-{phase}",
                            )
                            for phase, seconds in (("warm", WARMUP_S), ("steady", d))
                        )
                        report.append(
                            fmt_load(
                                f"  {name}, batch {batch}, {n} client(s), {rate} req/s",
                                steady,
                                f"  (first {WARMUP_S} s: p99 {warm.p99_ms:.1f} ms)",
                            )
                        )
                        log(report[-1])
            bare.stop()

            report += [
                "",
                "A client flooding over its quota (1000 ev/s) beside 10 clients at a "
                "fixed rate (batches of 50):",
            ]
            rate = max(10, int(maxima[("capture", 50, CLIENTS)].rps / 4))
            ten = [client_id(i) for i in range(10)]

            def ten_clients(tag: str) -> Load:
                return run_vegeta(
                    vegeta,
                    cap.url,
                    "/v1/batch",
                    50,
                    ten,
                    rate=rate,
                    duration=d,
                    workdir=work,
                    tag=tag,
                )

            alone = ten_clients("alone")
            report.append(fmt_load(f"  10 clients alone, {rate} req/s", alone))
            log(report[-1])
            flood: dict[str, Load] = {}

            def flooding() -> None:
                flood["load"] = run_wrk(
                    cap.url, "/v1/batch", 50, [basic(NOISY)], duration=d + 2, connections=32
                )

            flooder = threading.Thread(target=flooding)
            flooder.start()
            time.sleep(1)
            beside = ten_clients("beside")
            flooder.join()
            report.append(fmt_load("  10 clients beside the flood", beside))
            noisy = flood["load"]
            report.append(
                f"  the flooding client: {noisy.requests:,} requests, "
                f"{noisy.requests - noisy.non2xx:,} admitted (200), {noisy.non2xx:,} refused (429)"
            )
            log(report[-2])
            log(report[-1])

        report += ["", "Overload: 1000 connections of 50-event batches:"]
        idle = cap.rss_mib()
        peak = [idle]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak.append(cap.rss_mib())
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            over = run_wrk(cap.url, "/v1/batch", 50, hundred, duration=d, connections=1000)
        finally:
            stop.set()
            sampler.join()
        report.append(fmt_load("  capture under overload", over, f"  socket errors {over.errors}"))
        report.append(f"  capture RSS: {idle:.0f} MiB idle, {max(peak):.0f} MiB peak")
        log(report[-1])
    finally:
        bare.stop()
        cap.stop()
    report += ["", f"At the end: {load_average()}"]
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
