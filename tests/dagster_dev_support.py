"""Running `dagster dev` in a test and talking to it through GraphQL, as the UI does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from analytics_core.settings import REPO_ROOT

DAGSTER = Path(REPO_ROOT) / ".venv" / "bin" / "dagster"
LOCATION = "analytics_pipeline"
REPOSITORY = "__repository__"


def _free_port() -> int:
    # Not tests.conftest's: the benchmarks import this module outside pytest.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GraphQL:
    def __init__(self, port: int, pid: int | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}/graphql"
        self.pid = pid  # the `dagster dev` process, when this harness started it

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        req = urllib.request.Request(
            self.url, body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            doc = json.loads(resp.read())
        assert not doc.get("errors"), doc["errors"]
        return dict(doc["data"])


def wait_for(predicate: Callable[[], Any], what: str, timeout_s: float) -> Any:
    """Poll once a second; connection errors (server still starting) count as not yet."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def location_loaded(gql: GraphQL) -> bool:
    data = gql(
        """{ workspaceOrError { ... on Workspace { locationEntries {
             name loadStatus locationOrLoadError { __typename ... on PythonError { message } }
        } } } }"""
    )
    for entry in data["workspaceOrError"]["locationEntries"]:
        if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"]
            assert loaded["__typename"] == "RepositoryLocation", loaded
            return True
    return False


def processes_of(pid: int) -> set[int]:
    """`pid`, its descendants, and every member of their sessions (orphans included)."""
    parents: dict[int, int] = {}
    sessions: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            parents[int(entry)], sessions[int(entry)] = int(fields[1]), int(fields[3])
    found = {pid}
    grew = True
    while grew:
        more = {p for p, parent in parents.items() if parent in found}
        more |= {p for p, sid in sessions.items() if sid in found}
        grew = not more <= found
        found |= more
    return found


def running(pids: set[int]) -> set[int]:
    """The pids still running (zombies waiting to be reaped are not running)."""
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


@contextmanager
def running_dagster_dev(
    env: Mapping[str, str], log_path: Path, workspace: Path = REPO_ROOT / "workspace.yaml"
) -> Iterator[GraphQL]:
    """`dagster dev` on a free port until the code location is loaded; stopped on exit."""
    port = _free_port()
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [str(DAGSTER), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: webserver, daemon, code servers
    )
    gql = GraphQL(port, proc.pid)
    try:
        wait_for(lambda: proc.poll() is not None or gql("{ version }"), "the webserver", 120)
        assert proc.poll() is None, log_path.read_text()[-3000:]
        wait_for(lambda: location_loaded(gql), "the code location", 120)
        yield gql
    finally:
        # Code servers and run workers may outlive dagster dev: stop every process of it.
        everyone = processes_of(proc.pid)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for pid in running(everyone - {proc.pid}):
            os.kill(pid, signal.SIGKILL)
        log.close()
