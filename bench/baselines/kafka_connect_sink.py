"""Baseline: ClickHouse's official Kafka Connect sink in a standalone Kafka Connect worker.

This is what a ClickHouse user would run instead of our router: Apache Kafka Connect
(`org.apache.kafka.connect.cli.ConnectStandalone`, same Kafka version as devstack) with
`com.clickhouse.kafka.connect.ClickHouseSinkConnector`, schemaless JSON values
(`JsonConverter`, schemas.enable=false), one topic into one existing table.

Jars:
- Kafka Connect comes from Maven Central (bench/baselines/connect/pom.xml), fetched once into
  $CONNECT_JARS_DIR or ~/.cache/analytics-pipeline/connect-<kafka version>/ (a `.complete`
  marker is written only after Maven copied every jar).
- The ClickHouse sink is NOT on Maven Central: ClickHouse ships it only as a release zip
  (GitHub releases of ClickHouse/clickhouse-kafka-connect, also Confluent Hub). Give it with
  CLICKHOUSE_KAFKA_CONNECT_PLUGIN=<the release .zip, its -confluent.jar, or a directory>;
  without it Maven Central is asked anyway (profile `official-sink`, version
  $CLICKHOUSE_KAFKA_CONNECT_VERSION or the pom's), and when that fails too `run_sink` returns a
  `SinkResult` whose `error` says so instead of raising.

Timing: `seconds` runs from starting the JVM to the moment `SELECT count()` first shows
`expected_rows` (so it includes JVM start-up and plugin scanning; `startup_s`, the time to the
first visible row, tells how much). `peak_rss_mib` is the worker JVM's VmHWM.

Usage: .venv/bin/python -m bench.baselines.kafka_connect_sink --events 20000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from analytics_core import kafka_clients
from analytics_core.clickhouse import http_client
from analytics_core.naming import quote_identifier
from analytics_core.settings import Settings
from devstack import process

CONNECT_DIR = Path(__file__).resolve().parent / "connect"
POM = CONNECT_DIR / "pom.xml"
LOG4J2 = CONNECT_DIR / "connect-log4j2.properties"
MARKER = ".complete"
SINK_CLASS = "com.clickhouse.kafka.connect.ClickHouseSinkConnector"
JARS_ENV = "CONNECT_JARS_DIR"
PLUGIN_ENV = "CLICKHOUSE_KAFKA_CONNECT_PLUGIN"
VERSION_ENV = "CLICKHOUSE_KAFKA_CONNECT_VERSION"
# A failed Maven Central look-up for the sink is not repeated for this long.
MISSING_TTL_S = 24 * 3600.0

# Worker log lines after which the sink will not deliver anything more.
FATAL_PATTERNS = (
    r"Task threw an uncaught and unrecoverable exception",
    r"Task is being killed and will not recover",
    r"Failed to create connector",
    r"Failed to start connector",
    r"Stopping after connector error",
    r"Failed to find any class that implements Connector",
    r"Could not find or load main class",
    r"Error: Could not create the Java Virtual Machine",
)


class BaselineUnavailable(RuntimeError):
    """The Connect runtime or the sink plugin cannot be had; the message says why and what to do."""


@dataclass(frozen=True)
class SinkResult:
    rows: int
    seconds: float
    events_per_s: float
    peak_rss_mib: float
    error: str | None = None
    startup_s: float | None = None  # JVM start -> first row visible
    log_path: Path | None = None


# --- jars -----------------------------------------------------------------------------------


def _pom_property(name: str) -> str:
    m = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", POM.read_text())
    if not m:
        raise BaselineUnavailable(f"connect: no <{name}> in {POM}")
    return m.group(1).strip()


def kafka_version() -> str:
    return _pom_property("kafka.version")


def sink_version() -> str:
    return os.environ.get(VERSION_ENV) or _pom_property("clickhouse-kafka-connect.version")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "analytics-pipeline"


def default_jars_dir() -> Path:
    return cache_root() / f"connect-{kafka_version()}"


def _is_complete(jars_dir: Path) -> bool:
    return (jars_dir / MARKER).is_file() and any(jars_dir.glob("connect-runtime-*.jar"))


def _mvn(argv_tail: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BaselineUnavailable(
            "connect: Maven (`mvn`) is missing to fetch the Kafka Connect jars; "
            f"apt-get install -y maven (or set {JARS_ENV} to a directory of jars plus {MARKER})"
        )
    try:
        return subprocess.run(
            [mvn, "-q", "-B", "-f", str(POM), *argv_tail],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BaselineUnavailable(f"connect: Maven did not finish in {timeout:.0f}s") from None


def _tail(proc: subprocess.CompletedProcess[str], n: int = 15) -> str:
    return "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-n:])


def ensure_jars(jars_dir: Path | None = None, *, timeout: float = 900.0) -> Path:
    """The Kafka Connect runtime jar directory, downloaded with Maven once."""
    env_dir = os.environ.get(JARS_ENV)
    target = jars_dir or (Path(env_dir) if env_dir else default_jars_dir())
    if _is_complete(target):
        return target
    with process.file_lock(target.parent / f".{target.name}.lock"):
        if _is_complete(target):
            return target
        staging = target.parent / f".{target.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        print(
            f"[connect] fetching Kafka Connect {kafka_version()} jars into {target} (once)...",
            file=sys.stderr,
            flush=True,
        )
        proc = _mvn(
            [
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ],
            timeout,
        )
        if proc.returncode != 0 or not any(staging.glob("connect-runtime-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise BaselineUnavailable(
                f"connect: Maven could not fetch org.apache.kafka:connect-runtime:{kafka_version()}"
                f" (exit {proc.returncode}); is Maven Central reachable?\n{_tail(proc)}"
            )
        names = sorted(p.name for p in staging.glob("*.jar"))
        (staging / MARKER).write_text(f"connect {kafka_version()}\n" + "\n".join(names) + "\n")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
    return target


def _jar_has_class(jar: Path, class_name: str) -> bool:
    entry = class_name.replace(".", "/") + ".class"
    try:
        with zipfile.ZipFile(jar) as zf:
            return entry in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _install_plugin(source: Path, plugin_root: Path, connector_class: str) -> Path:
    """Copy the jars of `source` (a .jar, a release .zip or a directory) into
    `plugin_root/<name>/` and return `plugin_root` (the worker's plugin.path)."""
    if not source.exists():
        raise BaselineUnavailable(f"connect: {PLUGIN_ENV}={source} does not exist")
    stamp = f"{source.resolve()} {source.stat().st_mtime_ns} {connector_class}\n"
    marker = plugin_root / MARKER
    if marker.is_file() and marker.read_text() == stamp:
        return plugin_root
    shutil.rmtree(plugin_root, ignore_errors=True)
    dest = plugin_root / "clickhouse-kafka-connect"
    dest.mkdir(parents=True)
    if source.is_dir():
        for jar in sorted(source.rglob("*.jar")):
            shutil.copy2(jar, dest / jar.name)
    elif source.suffix == ".zip":
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".jar") and not info.is_dir():
                    (dest / Path(info.filename).name).write_bytes(zf.read(info))
    elif source.suffix == ".jar":
        shutil.copy2(source, dest / source.name)
    else:
        raise BaselineUnavailable(
            f"connect: {PLUGIN_ENV}={source} is not a .jar, a .zip or a directory"
        )
    jars = list(dest.glob("*.jar"))
    if not any(_jar_has_class(j, connector_class) for j in jars):
        shutil.rmtree(plugin_root, ignore_errors=True)
        raise BaselineUnavailable(
            f"connect: no jar from {source} holds {connector_class} ({len(jars)} jars looked at)"
        )
    marker.write_text(stamp)
    return plugin_root


def _not_on_central_message(version: str, detail: str) -> str:
    detail = re.sub(r" in https?://\S+", " in Maven Central", detail)
    return (
        f"ClickHouse Kafka Connect sink unavailable: com.clickhouse.kafka:clickhouse-kafka-connect:"
        f"{version} is not on Maven Central ({detail}). ClickHouse publishes the connector only "
        "as a release zip (GitHub releases of ClickHouse/clickhouse-kafka-connect, and Confluent "
        "Hub; publishing to Maven Central is the open request ClickHouse/clickhouse-kafka-connect"
        f"#488). Fetch clickhouse-kafka-connect-v<version>.zip elsewhere and set {PLUGIN_ENV} to "
        "the zip, its jar or the unpacked directory (or set "
        f"{VERSION_ENV} to a version that Maven Central serves)."
    )


def ensure_sink_plugin(
    source: Path | None = None, *, connector_class: str = SINK_CLASS, timeout: float = 600.0
) -> Path:
    """A plugin.path directory holding the sink; raises BaselineUnavailable saying why not.

    Order: `source`, then $CLICKHOUSE_KAFKA_CONNECT_PLUGIN, then Maven Central.
    """
    env_source = os.environ.get(PLUGIN_ENV)
    src = source or (Path(env_source).expanduser() if env_source else None)
    base = cache_root() / "clickhouse-kafka-connect-plugin"
    if src is not None:
        with process.file_lock(base / ".lock"):
            return _install_plugin(src, base / "local", connector_class)

    version = sink_version()
    plugin_root = base / f"maven-{version}"
    if (plugin_root / MARKER).is_file():
        return plugin_root
    missing = base / f".maven-missing-{version}"
    with process.file_lock(base / ".lock"):
        if (plugin_root / MARKER).is_file():
            return plugin_root
        if missing.is_file() and time.time() - missing.stat().st_mtime < MISSING_TTL_S:
            raise BaselineUnavailable(_not_on_central_message(version, missing.read_text().strip()))
        staging = base / f".maven-{version}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        proc = _mvn(
            [
                "-Pofficial-sink",
                f"-Dclickhouse-kafka-connect.version={version}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ],
            timeout,
        )
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            out = proc.stdout + proc.stderr
            m = re.search(r"(Could not find artifact [^\s]+|[^\s]+ was not found in [^\s]+)", out)
            detail = m.group(1) if m else f"Maven exit {proc.returncode}: {_tail(proc, 3)}"
            if "clickhouse-kafka-connect" in out:
                missing.parent.mkdir(parents=True, exist_ok=True)
                missing.write_text(detail + "\n")
                raise BaselineUnavailable(_not_on_central_message(version, detail))
            raise BaselineUnavailable(f"connect: Maven failed for the sink plugin:\n{_tail(proc)}")
        # Keep only the sink and what the Connect runtime does not already have.
        runtime = {p.name for p in ensure_jars().glob("*.jar")}
        for jar in staging.glob("*.jar"):
            if jar.name in runtime:
                jar.unlink()
        shutil.rmtree(plugin_root, ignore_errors=True)
        (plugin_root / "clickhouse-kafka-connect").mkdir(parents=True)
        for jar in staging.glob("*.jar"):
            os.replace(jar, plugin_root / "clickhouse-kafka-connect" / jar.name)
        shutil.rmtree(staging, ignore_errors=True)
        (plugin_root / MARKER).write_text(f"clickhouse-kafka-connect {version}\n")
    return plugin_root


# --- table ----------------------------------------------------------------------------------


def create_table(settings: Settings, database: str, table: str) -> None:
    """The sink's target table for our JSON events (create the database too).

    The sink writes schemaless JSON as JSONEachRow, so the columns carry the event's own
    field names. `timestamp`/`sent_at` are epoch milliseconds: JSONEachRow would read a bare
    integer into DateTime64 as seconds, so they stay Int64 and `event_timestamp` is derived.
    `properties` (an object) lands as its JSON text (input_format_json_read_objects_as_strings).
    Fields the table lacks (`api_key`) are skipped (input_format_skip_unknown_fields).
    """
    db, tbl = quote_identifier(database), quote_identifier(table)
    ch = http_client(settings.clickhouse)
    try:
        ch.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        ch.command(
            f"CREATE TABLE IF NOT EXISTS {db}.{tbl} ("
            " client_id LowCardinality(String),"
            " event_id UUID,"
            " event_name LowCardinality(String),"
            " timestamp Int64,"
            " sent_at Nullable(Int64),"
            " user_id String,"
            " properties String,"
            " event_timestamp DateTime64(3, 'UTC')"
            " MATERIALIZED fromUnixTimestamp64Milli(timestamp, 'UTC'),"
            " ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)"
            ") ENGINE = MergeTree"
            " ORDER BY (client_id, toDate(event_timestamp), event_name, event_id)"
        )
    finally:
        ch.close()


def count_rows(settings: Settings, database: str, table: str) -> int:
    ch = http_client(settings.clickhouse)
    try:
        sql = f"SELECT count() FROM {quote_identifier(database)}.{quote_identifier(table)}"
        return int(ch.query(sql).result_rows[0][0])
    finally:
        ch.close()


# --- run ------------------------------------------------------------------------------------


def _props(values: Mapping[str, object]) -> str:
    def esc(v: object) -> str:
        return str(v).replace("\\", "\\\\").replace("\n", "\\n")

    return "".join(f"{k}={esc(v)}\n" for k, v in values.items())


def worker_properties(
    settings: Settings,
    *,
    plugin_path: Path,
    offsets_file: Path,
    plugin_discovery: str = "hybrid_warn",
) -> dict[str, str]:
    return {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "offset.storage.file.filename": str(offsets_file),
        "offset.flush.interval.ms": "5000",
        "plugin.path": str(plugin_path),
        # Connect's default: reflective scanning (~10 s here) plus ServiceLoader manifests.
        # `service_load` skips the scan when every plugin jar has manifests.
        "plugin.discovery": plugin_discovery,
        # The REST API is not used; an ephemeral loopback port keeps runs from colliding.
        "listeners": "http://127.0.0.1:0",
        "consumer.auto.offset.reset": "earliest",
        # The sink docs' "Tuning Performance" advice for bigger inserts.
        "consumer.max.poll.records": "5000",
        "consumer.max.partition.fetch.bytes": str(5 * 1024 * 1024),
    }


def connector_properties(
    settings: Settings,
    *,
    name: str,
    topic: str,
    database: str,
    table: str,
    tasks: int,
    connector_class: str,
    exactly_once: bool,
) -> dict[str, str]:
    ch = settings.clickhouse
    return {
        "name": name,  # the sink's consumer group is connect-<name>
        "connector.class": connector_class,
        "tasks.max": str(tasks),
        "topics": topic,
        "topic2TableMap": f"{topic}={table}",
        "hostname": ch.host,
        "port": str(ch.http_port),
        "ssl": "true" if ch.secure else "false",
        "database": database,
        "username": ch.user,
        "password": ch.password,
        "exactlyOnce": "true" if exactly_once else "false",
        "errors.retry.timeout": "60",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "clickhouseSettings": (
            "input_format_json_read_objects_as_strings=1,input_format_skip_unknown_fields=1"
        ),
    }


def _peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return 0.0
    return 0.0


class _LogWatch:
    """Reads the worker log incrementally and remembers the first fatal error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.fatal: str | None = None

    def poll(self) -> str | None:
        if self.fatal is None:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(self.offset)
                    chunk = fh.read()
            except OSError:
                return None
            cut = chunk.rfind(b"\n") + 1
            self.offset += cut
            text = chunk[:cut].decode(errors="replace")
            if any(re.search(p, text) for p in FATAL_PATTERNS):
                # Let the stack trace reach the log before it is summarised.
                time.sleep(0.5)
                self.fatal = summarize_errors(self.path)
        return self.fatal


def summarize_errors(log_path: Path, *, limit: int = 12) -> str:
    """The worker log's first ERROR line(s) plus every distinct `Caused by:` line."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {log_path})"
    errors: list[str] = []
    causes: list[str] = []
    for i, line in enumerate(lines):
        if " ERROR " in line or line.startswith(("Error:", "Exception in thread")):
            errors.append(line.strip())
            # The exception line right after an ERROR line says what happened.
            if i + 1 < len(lines) and not lines[i + 1].startswith("["):
                errors.append("  " + lines[i + 1].strip())
        elif line.lstrip().startswith("Caused by:") and line.strip() not in causes:
            causes.append(line.strip())
    picked = errors[:4] + causes[:limit]
    if not picked:
        picked = [ln.strip() for ln in lines[-limit:]]
    return "\n".join(s[:400] for s in picked) + f"\n(full log: {log_path})"


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run_sink(
    settings: Settings,
    *,
    topic: str,
    database: str,
    table: str,
    expected_rows: int,
    timeout_s: float,
    group_id: str,
    log_dir: Path,
    tasks: int = 1,
    exactly_once: bool = False,
    heap: str = "512m",
    plugin_discovery: str = "hybrid_warn",
    plugin: Path | None = None,
    connector_class: str = SINK_CLASS,
    extra_connector_props: Mapping[str, str] | None = None,
) -> SinkResult:
    """Run the sink from the start of `topic` until `expected_rows` rows are in the table.

    Never raises for a sink that cannot run: the reason is in `SinkResult.error`.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", group_id)
    log_path = log_dir / f"connect-{safe}.log"

    def failed(msg: str, rows: int = 0, rss: float = 0.0) -> SinkResult:
        return SinkResult(rows, 0.0, 0.0, rss, error=msg, log_path=log_path)

    try:
        jars = ensure_jars()
        plugin_path = ensure_sink_plugin(plugin, connector_class=connector_class)
    except BaselineUnavailable as exc:
        return failed(str(exc))
    java = shutil.which("java")
    if java is None:
        return failed("connect: `java` not found; install Java 17+")

    offsets = log_dir / f"connect-{safe}.offsets"
    offsets.unlink(missing_ok=True)
    worker_path = log_dir / f"connect-{safe}-worker.properties"
    connector_path = log_dir / f"connect-{safe}-sink.properties"
    worker_path.write_text(
        _props(
            worker_properties(
                settings,
                plugin_path=plugin_path,
                offsets_file=offsets,
                plugin_discovery=plugin_discovery,
            )
        )
    )
    cprops = connector_properties(
        settings,
        name=group_id,
        topic=topic,
        database=database,
        table=table,
        tasks=tasks,
        connector_class=connector_class,
        exactly_once=exactly_once,
    )
    cprops.update(extra_connector_props or {})
    connector_path.write_text(_props(cprops))
    argv = [
        java,
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J2}",
        "-cp",
        f"{jars}/*",
        "org.apache.kafka.connect.cli.ConnectStandalone",
        str(worker_path),
        str(connector_path),
    ]

    rows = 0
    rss = 0.0
    first: float | None = None
    done: float | None = None
    error: str | None = None
    watch = _LogWatch(log_path)
    with open(log_path, "wb") as log_fh:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv, stdout=log_fh, stderr=subprocess.STDOUT, cwd=log_dir, start_new_session=True
        )
        try:
            while True:
                now = time.monotonic()
                try:
                    rows = count_rows(settings, database, table)
                except Exception as exc:  # ClickHouse trouble ends the run
                    error = f"counting rows in {database}.{table} failed: {exc}"
                    break
                if rows > 0 and first is None:
                    first = now - t0
                if rows >= expected_rows:
                    done = now - t0
                    break
                rss = max(rss, _peak_rss_mib(proc.pid))
                if proc.poll() is not None:
                    error = (
                        f"the Connect worker exited with code {proc.returncode} after "
                        f"{now - t0:.1f}s with {rows} of {expected_rows} rows:\n"
                        + summarize_errors(log_path)
                    )
                    break
                fatal = watch.poll()
                if fatal is not None:
                    error = (
                        f"the sink failed after {now - t0:.1f}s with {rows} of "
                        f"{expected_rows} rows:\n{fatal}"
                    )
                    break
                if now - t0 > timeout_s:
                    error = (
                        f"timed out after {timeout_s:.0f}s with {rows} of {expected_rows} "
                        f"rows; worker log:\n{summarize_errors(log_path)}"
                    )
                    break
                time.sleep(0.2)
            rss = max(rss, _peak_rss_mib(proc.pid))
        finally:
            _stop(proc)
    with contextlib.suppress(Exception):
        rows = count_rows(settings, database, table)  # duplicates, if any, show here
    if error is not None or done is None:
        return SinkResult(
            rows, 0.0, 0.0, rss, error=error or "no result", startup_s=first, log_path=log_path
        )
    return SinkResult(
        rows, done, expected_rows / done if done else 0.0, rss, startup_s=first, log_path=log_path
    )


# --- CLI ------------------------------------------------------------------------------------


def create_topic(settings: Settings, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import NewTopic

    admin = kafka_clients.admin(settings.kafka)
    for fut in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        fut.result(30)


def delete_topic(settings: Settings, topic: str) -> None:
    admin = kafka_clients.admin(settings.kafka)
    for fut in admin.delete_topics([topic]).values():
        with contextlib.suppress(Exception):
            fut.result(30)


def produce_events(
    settings: Settings, topic: str, n: int, *, clients: int = 10, pad: int = 190
) -> float:
    """Produce `n` ~500-byte events (router.send_events' format) keyed by client; seconds."""
    import orjson

    from router.send_events import valid_event

    producer = kafka_clients.producer(
        settings.kafka,
        **{
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
        },
    )
    ids = [f"bench-connect-{i}" for i in range(clients)]
    t0 = time.monotonic()
    for i in range(n):
        cid = ids[i % clients]
        value = orjson.dumps(valid_event(cid, "bench-key", i, pad=pad))
        while True:
            try:
                producer.produce(topic, value=value, key=cid.encode())
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} events were not delivered to {topic}")
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--tasks", type=int, default=1, help="connector tasks.max (default 1)")
    p.add_argument("--exactly-once", action="store_true", help="sink exactlyOnce=true")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument(
        "--plugin-discovery",
        default="hybrid_warn",
        help="worker plugin.discovery (service_load skips the ~10 s class scan)",
    )
    p.add_argument(
        "--plugin",
        type=Path,
        default=None,
        help=f"sink release zip/jar/dir (else ${PLUGIN_ENV}, else Maven Central)",
    )
    p.add_argument("--log-dir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the topic and the database")
    args = p.parse_args(argv)

    settings = Settings.from_env()
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench_connect_{run_id}"
    database, table = f"bench_connect_{run_id}", "events"
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="bench-connect-"))
    try:
        jars = ensure_jars()
    except BaselineUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in jars.glob("*.jar")) / 2**20
    print(
        f"Kafka Connect {kafka_version()}: {len(list(jars.glob('*.jar')))} jars, "
        f"{size:.0f} MiB in {jars}"
    )
    try:
        plugin_path = ensure_sink_plugin(args.plugin)
    except BaselineUnavailable as exc:
        print(f"Kafka Connect sink baseline: FAILED (not run)\n{exc}")
        return 1
    plugin_jars = list(plugin_path.rglob("*.jar"))
    print(
        f"sink plugin: {len(plugin_jars)} jars, "
        f"{sum(j.stat().st_size for j in plugin_jars) / 2**20:.0f} MiB in {plugin_path}"
    )
    create_topic(settings, topic, args.partitions)
    create_table(settings, database, table)
    try:
        secs = produce_events(settings, topic, args.events)
        print(
            f"produced {args.events} events to {topic} ({args.partitions} partitions) "
            f"in {secs:.1f}s"
        )
        res = run_sink(
            settings,
            topic=topic,
            database=database,
            table=table,
            expected_rows=args.events,
            timeout_s=args.timeout,
            group_id=f"bench-connect-{run_id}",
            log_dir=log_dir,
            tasks=args.tasks,
            exactly_once=args.exactly_once,
            plugin=args.plugin,
            plugin_discovery=args.plugin_discovery,
        )
    finally:
        if not args.keep:
            delete_topic(settings, topic)
            with contextlib.suppress(Exception):
                ch = http_client(settings.clickhouse)
                ch.command(f"DROP DATABASE IF EXISTS {quote_identifier(database)} SYNC")
                ch.close()
    if res.error:
        print(f"Kafka Connect sink baseline: FAILED ({res.rows} rows)\n{res.error}")
        return 1
    first = res.startup_s or 0.0
    after_first = res.seconds - first
    print(
        f"Kafka Connect sink baseline: {res.rows} rows in {res.seconds:.1f}s "
        f"(JVM start -> last row visible) = {res.events_per_s:.0f} events/s"
    )
    print(
        f"  first row visible after {first:.1f}s (JVM start, plugin scan, task start); "
        f"first -> last row {after_first:.1f}s"
        + (f" = {args.events / after_first:.0f} events/s" if after_first > 0 else "")
    )
    print(f"  worker peak RSS (VmHWM) {res.peak_rss_mib:.0f} MiB; log {res.log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
