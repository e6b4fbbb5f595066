"""Benchmark: a dlt batch load of N page_views rows for one client, and reprocessing M dead
letters, on the real local stack. Prints wall time, rows/s and peak memory (max RSS) of the
process that does the work (a child process, so data generation is not counted).

Batch: N rows as JSONL files (--files of them) in a fresh client's landing zone; the child
plans and runs the load exactly as the Dagster asset does (dlt state restored from the
destination, merge on page_view_id); then a second run that finds nothing new.

Dead letters: M crafted envelopes on a private dead-letter topic (70% recoverable for an
active client -> replayed to a private raw topic, 20% schema_violation -> parked in
PostgreSQL, 10% for an unregistered client -> deferred in PostgreSQL); the child runs one
unfiltered reprocessing pass. Private topics, the client and the PostgreSQL rows are removed
at the end.

Usage: .venv/bin/python -m bench.bench_batch_and_dlq [--rows 1000000] [--letters 100000]
       [--files 10] [--skip-batch] [--skip-dlq] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.admin import NewTopic

from analytics_core import kafka_clients, lifecycle, pg, registry
from analytics_core.clickhouse import http_client
from analytics_core.connections import open_connections
from analytics_core.dead_letter import DeadLetter
from analytics_core.event_contract import Origin, hash_api_key
from analytics_core.reasons import Reason
from analytics_core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false", "PYTHONPATH": str(REPO)}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not getrusage's ru_maxrss: on Linux ru_maxrss survives
    execve, so a child would report its parent's peak (e.g. the data generation)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------ children


def child_load(client_id: str) -> dict[str, Any]:
    from analytics_core.batch.client_load import LoadPlan, plan_client_load, run_plan
    from analytics_core.batch.pipeline import pipelines_dir

    settings = Settings.from_env()
    out: dict[str, Any] = {}
    for label in ("first", "second"):
        start = time.perf_counter()
        with open_connections(settings) as c:
            plan = plan_client_load(c, client_id, working_dir=pipelines_dir(settings))
        assert isinstance(plan, LoadPlan), plan
        summary = run_plan(plan)
        out[label] = {
            "seconds": time.perf_counter() - start,
            "rows": summary.report.rows,
            "load_ids": summary.load_ids,
        }
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def child_reprocess(raw: str, dead: str, group: str) -> dict[str, Any]:
    from analytics_core.dlq.reprocess import ReprocessOptions, reprocess

    base = Settings.from_env()
    settings = replace(base, kafka=replace(base.kafka, raw_topic=raw, dead_letter_topic=dead))
    start = time.perf_counter()
    report = reprocess(settings, ReprocessOptions(group_id=group))
    return {
        "seconds": time.perf_counter() - start,
        "read": report.read,
        "by_outcome": report.tally.by_outcome(),
        "peak_rss_mib": peak_rss_mib(),
    }


def run_child(args: list[str], timeout: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_batch_and_dlq", *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------ setup


def make_client(settings: Settings, prefix: str) -> tuple[str, str]:
    client_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    conn = pg.connect(settings.postgres)
    try:
        registry.apply_metadata_schema(conn)
        registry.add_client(conn, client_id, hash_api_key("bench"), name="bench")
    finally:
        conn.close()
    with open_connections(settings) as c:
        outcome = lifecycle.provision(c, client_id)
    assert isinstance(outcome, lifecycle.Provisioned), outcome
    return client_id, outcome.database


def set_batch_source(settings: Settings, client_id: str, url: str) -> None:
    conn = pg.connect(settings.postgres)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE clients SET batch_source_url = %s WHERE client_id = %s", (url, client_id)
            )
        conn.commit()
    finally:
        conn.close()


def write_page_views(root: Path, rows: int, files: int) -> int:
    pages = ["/", "/pricing", "/docs", "/blog", "/signup"]
    per_file = -(-rows // files)
    written = 0
    (root / "page_views").mkdir(parents=True, exist_ok=True)
    for f in range(files):
        with (root / "page_views" / f"page_views_{f:04d}.jsonl").open("wb") as out:
            for i in range(f * per_file, min(rows, (f + 1) * per_file)):
                doc = {
                    "page_view_id": f"pv-{i:09d}",
                    "user_id": f"u-{i % 50_000}",
                    "url": pages[i % 5],
                    "referrer": "https://news.example.com" if i % 3 == 0 else None,
                    "viewed_at": f"2024-05-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
                    "duration_ms": 500 + i % 10_000,
                }
                out.write(orjson.dumps(doc) + b"\n")
                written += 1
    return written


def letters(client_id: str, count: int) -> Iterator[tuple[bytes, list[tuple[str, bytes]]]]:
    ghost = f"bench-ghost-{uuid.uuid4().hex[:8]}"
    for i in range(count):
        kind = i % 10
        if kind < 7:
            reason, cid = Reason.CLIENT_INACTIVE, client_id
        elif kind < 9:
            reason, cid = Reason.SCHEMA_VIOLATION, client_id
        else:
            reason, cid = Reason.UNKNOWN_CLIENT, ghost
        payload = orjson.dumps(
            {
                "client_id": cid,
                "api_key": "bench",
                "event_id": str(uuid.uuid4()),
                "event_name": "page_view",
                "timestamp": 1_714_564_800_000 + i,
                "user_id": f"u-{i % 1000}",
                "properties": {"url": "/", "n": i},
            }
        )
        letter = DeadLetter(
            reason=reason,
            detail="bench",
            origin=Origin("bench_raw", i % 6, i),
            source=Origin("bench_raw", i % 6, i),
            batch_index=0,
            client_id=cid,
            event_id=None,
            first_failed_at=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            attempt=1,
            router_version="bench",
        )
        yield payload, letter.headers()


# ------------------------------------------------------------------------------ phases


def bench_batch(settings: Settings, rows: int, files: int, timeout: float) -> None:
    client_id, database = make_client(settings, "bench-batch")
    landing = settings.state_dir / "bench" / client_id
    try:
        t = time.perf_counter()
        written = write_page_views(landing, rows, files)
        size = sum(p.stat().st_size for p in landing.rglob("*") if p.is_file())
        log(
            f"wrote {written} page_views rows in {files} JSONL files ({size / 2**20:.0f} MiB)"
            f" in {time.perf_counter() - t:.1f}s"
        )
        set_batch_source(settings, client_id, str(landing))
        result = run_child(["child-load", client_id], timeout)
        first, second = result["first"], result["second"]
        ch = http_client(settings.clickhouse)
        try:
            q = f"SELECT count(), uniqExact(page_view_id) FROM `{database}`.page_views"
            count, distinct = ch.query(q).result_rows[0]
        finally:
            ch.close()
        assert first["rows"]["page_views"] == rows and (count, distinct) == (rows, rows)
        log(
            f"batch load: {rows} rows in {first['seconds']:.1f}s "
            f"({rows / first['seconds']:,.0f} rows/s); second run (nothing new) "
            f"{second['seconds']:.1f}s; peak RSS {result['peak_rss_mib']:.0f} MiB; "
            f"ClickHouse rows {count}, distinct keys {distinct}"
        )
    finally:
        shutil.rmtree(landing, ignore_errors=True)
        with open_connections(settings) as c:
            lifecycle.deprovision(c, client_id, client_id)


def bench_dlq(settings: Settings, count: int, timeout: float) -> None:
    client_id, _database = make_client(settings, "bench-dlq")
    tag = uuid.uuid4().hex[:8]
    raw, dead = f"bench_raw_{tag}", f"bench_dead_{tag}"
    admin = kafka_clients.admin(settings.kafka)
    for f in admin.create_topics([NewTopic(t, 6, 1) for t in (raw, dead)]).values():
        f.result(30)
    try:
        t = time.perf_counter()
        producer = kafka_clients.producer(settings.kafka, **{"linger.ms": 50})
        for payload, headers in letters(client_id, count):
            while True:
                try:
                    producer.produce(
                        dead, value=payload, key=client_id.encode(), headers=list(headers)
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
        assert producer.flush(120) == 0
        log(f"wrote {count} dead letters in {time.perf_counter() - t:.1f}s")
        result = run_child(["child-reprocess", raw, dead, f"bench-{tag}"], timeout)
        outcome = result["by_outcome"]
        assert result["read"] == count, result
        log(
            f"dead-letter reprocessing: {count} letters in {result['seconds']:.1f}s "
            f"({count / result['seconds']:,.0f} letters/s); replayed {outcome['replayed']}, "
            f"parked {outcome['parked']}, deferred {outcome['deferred']}; "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB"
        )
    finally:
        for f in admin.delete_topics([raw, dead]).values():
            f.result(30)
        conn = pg.connect(settings.postgres)
        try:
            with conn.cursor() as cur:
                for table in (
                    "parked_dead_letters",
                    "deferred_dead_letters",
                    "replayed_dead_letters",
                ):
                    cur.execute(f"DELETE FROM {table} WHERE dl_topic = %s", (dead,))
            conn.commit()
        finally:
            conn.close()
        with open_connections(settings) as c:
            lifecycle.deprovision(c, client_id, client_id)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child-load"]:
        print(json.dumps(child_load(argv[1])))
        return 0
    if argv[:1] == ["child-reprocess"]:
        print(json.dumps(child_reprocess(argv[1], argv[2], argv[3])))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_batch_and_dlq", description=__doc__
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--letters", type=int, default=100_000)
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--skip-dlq", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per phase")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if not args.skip_batch:
        bench_batch(settings, args.rows, args.files, args.timeout)
    if not args.skip_dlq:
        bench_dlq(settings, args.letters, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
