"""Benchmark: what a Dagster run costs, with `dagster dev` as `bin/dev` runs it.

Starts `dagster dev` (the repository's workspace.yaml and dagster.yaml) on a sandbox registry
and Dagster storage (fresh PostgreSQL databases, removed at the end), lets it settle, then:

- Dagster at rest: RSS of dagster dev and all its processes (webserver, daemon, code server)
  once the code location is loaded and the sensors have ticked;
- provisioning runs: N pending clients, each provisioned by a `provision_client` run launched
  through GraphQL as the UI launches it (add the partition, launch for it), one after the
  other with the stack warm; for each, launch -> SUCCESS wall time (polled every 0.1 s) and
  the peak RSS of the processes the run added (run worker, step processes), and where the
  time went (queue, launch, run worker start, resources, steps) from the run's event log;
- concurrency: the instance's run limit, as dagster.yaml sets it.

The provisioning sensor is stopped first, so only the measured runs exist. Prints one line per
run and a summary (median and max).

Usage: .venv/bin/python -m bench.bench_dagster_runs [--runs 5] [--settle 20]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from analytics_core.settings import Settings
from tests.dagster_dev_support import LOCATION, REPOSITORY, GraphQL, running_dagster_dev
from tests.dagster_sandbox import Sandbox, sandbox

REPO = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
SENSOR = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { __typename ... on Sensor { id } }
}"""
STOP_SENSOR = """
mutation Stop($id: String!) { stopSensor(id: $id) { __typename } }"""
ADD_PARTITION = """
mutation Add($repo: RepositorySelector!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: "clients", partitionKey: $key) {
    __typename
  }
}"""
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}"""
STATUS = """query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- processes


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss(root: int) -> dict[int, int]:
    """pid -> RSS (KiB) of `root` and all its descendants."""
    children = _children()
    out: dict[int, int] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        out[pid] = _rss_kib(pid)
        todo.extend(children.get(pid, []))
    return out


class RunSampler:
    """Samples the RSS of the processes that were not there at rest, while a run goes."""

    def __init__(self, root: int, at_rest: set[int]) -> None:
        self.root = root
        self.at_rest = at_rest
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            added = {p: r for p, r in tree_rss(self.root).items() if p not in self.at_rest}
            self.peak_kib = max(self.peak_kib, sum(added.values()))
            self._stop.wait(0.1)

    def __enter__(self) -> RunSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# ----------------------------------------------------------------------------- runs


def stop_provisioning_sensor(gql: GraphQL) -> None:
    selector = {**REPO, "sensorName": "provisioning_sensor"}
    found = gql(SENSOR, selector=selector)["sensorOrError"]
    assert found["__typename"] == "Sensor", found
    gql(STOP_SENSOR, id=found["id"])


# Where a run's time goes, from its own event log: (label, event that opens the phase).
PHASES = (
    ("queued", "RUN_ENQUEUED"),
    ("dequeued->starting", "RUN_DEQUEUED"),
    ("worker start", "RUN_STARTING"),
    ("resources", "RUN_START"),
    ("steps", "STEP_START"),
    ("finish", "STEP_SUCCESS"),
)


def phases(sb: Sandbox, run_id: str) -> dict[str, float]:
    """Seconds per phase of a finished run (first STEP_START, last STEP_SUCCESS)."""
    at: dict[str, float] = {}
    for record in sb.instance.all_logs(run_id):
        kind = record.dagster_event.event_type.name if record.dagster_event else None
        if kind is None:
            continue
        if kind not in at or kind == "STEP_SUCCESS":
            at[kind] = record.timestamp
    marks = [(label, at[kind]) for label, kind in PHASES if kind in at]
    if "RUN_SUCCESS" in at:
        marks.append(("end", at["RUN_SUCCESS"]))
    return {a[0]: round(b[1] - a[1], 2) for a, b in itertools.pairwise(marks)}


def provision_once(gql: GraphQL, sb: Sandbox, root: int, at_rest: set[int]) -> tuple[float, int]:
    """(launch -> SUCCESS seconds, peak RSS KiB the run added) of one provisioning run."""
    client_id = f"bench-{uuid.uuid4().hex[:8]}"
    sb.add_client(client_id, "bench-key")
    gql(ADD_PARTITION, repo=REPO, key=client_id)
    params = {
        "selector": {**REPO, "pipelineName": "provision_client"},
        "runConfigData": {},
        "mode": "default",
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": client_id}]},
    }
    with RunSampler(root, at_rest) as sampler:
        start = time.monotonic()
        launched = gql(LAUNCH, params=params)["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        while True:
            status = gql(STATUS, id=run_id)["runOrError"]["status"]
            if status in {"SUCCESS", "FAILURE", "CANCELED"}:
                break
            if time.monotonic() - start > 600:
                raise SystemExit(f"run {run_id} did not finish in 600 s")
            time.sleep(0.1)
        elapsed = time.monotonic() - start
    if status != "SUCCESS":
        raise SystemExit(f"run {run_id} ended {status}")
    log(f"  phases (s): {phases(sb, run_id)}")
    return elapsed, sampler.peak_kib


def measure(sb: Sandbox, tmp: Path, runs: int, settle: float) -> None:
    env = {**sb.env(), "RUNTIME__DLTHUB_TELEMETRY": "false"}
    log("starting dagster dev")
    with running_dagster_dev(env, tmp / "dagster_dev.log") as gql:
        assert gql.pid is not None
        stop_provisioning_sensor(gql)
        time.sleep(settle)
        rest = tree_rss(gql.pid)
        log(f"Dagster at rest: {sum(rest.values()) / 1024:.0f} MiB in {len(rest)} processes")
        times: list[float] = []
        peaks: list[int] = []
        for i in range(runs):
            elapsed, peak = provision_once(gql, sb, gql.pid, set(rest))
            log(f"provisioning run {i + 1}: {elapsed:.2f} s, run RSS {peak / 1024:.0f} MiB")
            times.append(elapsed)
            peaks.append(peak)
    # The first run also warms the stack (ClickHouse, caches): the summary leaves it out.
    warm_times, warm_peaks = times[1:] or times, peaks[1:] or peaks
    log(
        f"provisioning run, launch -> SUCCESS (warm, {len(warm_times)} runs): median "
        f"{statistics.median(warm_times):.2f} s, max {max(warm_times):.2f} s"
    )
    log(
        f"RSS per running run: median {statistics.median(warm_peaks) / 1024:.0f} MiB, "
        f"max {max(warm_peaks) / 1024:.0f} MiB"
    )
    config = sb.instance.get_concurrency_config().run_queue_config
    log(f"max concurrent runs (dagster.yaml): {config.max_concurrent_runs if config else None}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_dagster_runs", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="provisioning runs (default 5)")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds at rest (default 20)")
    args = parser.parse_args(argv)
    Settings.from_env()  # fail fast on bad configuration
    with (
        tempfile.TemporaryDirectory(prefix="bench-dagster-") as tmp,
        sandbox(Path(tmp) / "home", prefix="bench") as sb,
    ):
        measure(sb, Path(tmp), args.runs, args.settle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
