"""A local ClickHouse server under <state>/<name> (the process: clickhouse_server.py).

`clickhouse` serves the default target; with DEVSTACK_CLICKHOUSE_SERVERS > 1 the servers
`clickhouse-ch2`, ... serve the targets ch2, ... (see topology.py).
"""

from __future__ import annotations

import base64
import importlib.util
import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

from analytics_core.settings import DEFAULT_TARGET, Settings

from . import process
from .options import Options
from .service import Port, Service, StackError
from .topology import ClickHouseServer

REPO_ROOT = Path(__file__).resolve().parent.parent


class ClickHouseService(Service):
    family = "clickhouse"
    stop_timeout: ClassVar[float] = 30.0
    fatal_patterns: ClassVar[tuple[str, ...]] = (
        r"Code: 76\..*",  # data dir locked by another server
        r"Code: 210\..*",  # port in use
        r"^Traceback ",
        r"clickhouse_server: query failed",
        r"clickhouse-local returned",
    )

    def __init__(self, settings: Settings, options: Options, server: ClickHouseServer) -> None:
        super().__init__(settings, options)
        self.server = server
        self.name = server.name

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def token_path(self) -> Path:
        return self.dir / "keepalive.token"

    def address(self) -> str:
        ch = self.server
        where = f"http://{ch.host}:{ch.http_port} native {ch.host}:{ch.native_port}"
        return where if ch.target == DEFAULT_TARGET else f"{where} (target {ch.target})"

    def ports(self) -> list[Port]:
        ch = self.server
        return [
            Port(ch.http_port, f"{ch.env_prefix}HTTP_PORT"),
            Port(ch.native_port, f"{ch.env_prefix}NATIVE_PORT"),
        ]

    def markers(self) -> list[str]:
        return ["devstack.clickhouse_server", f"--data {self.data_dir}"]

    def preflight(self) -> None:
        if importlib.util.find_spec("chdb") is None:
            raise StackError(
                "clickhouse: the chdb-core wheel is missing in this Python; "
                "pip install 'chdb-core==26.9.0' (or the project's [localstack] extra)"
            )

    def launch(self) -> None:
        ch = self.server
        self.data_dir.mkdir(parents=True, exist_ok=True)
        token = f"devstack_keepalive_{secrets.token_hex(8)}"
        self.token_path.write_text(token + "\n")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        argv = [
            sys.executable,
            "-m",
            "devstack.clickhouse_server",
            "--data",
            str(self.data_dir),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(ch.http_port),
            "--tcp-port",
            str(ch.native_port),
            "--token",
            token,
        ]
        pid = process.spawn_detached(argv, log_path=self.log_path, cwd=self.dir, env=env)
        process.write_pid(self.pid_path, pid)

    def _token(self) -> str | None:
        try:
            return self.token_path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def http(self, query: str, timeout: float = 3.0) -> str:
        """Run one query over HTTP with the server's host/credentials; return the body."""
        ch = self.server
        scheme = "https" if ch.secure else "http"
        req = urllib.request.Request(
            f"{scheme}://{ch.host}:{ch.http_port}/", data=query.encode(), method="POST"
        )
        cred = base64.b64encode(f"{ch.user}:{ch.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {cred}")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body: bytes = resp.read()
        return body.decode()

    def probe(self) -> str | None:
        token = self._token()
        if token is None:
            return "no keep-alive token (not started by devstack)"
        ch = self.server
        if not process.port_open(ch.host, ch.http_port):
            return f"nothing listens on {ch.host}:{ch.http_port}"
        query = (
            "SELECT count() FROM system.processes "
            f"WHERE query LIKE '%{token}%' AND query NOT LIKE '%system.processes%'"
        )
        try:
            seen = self.http(query).strip()
        except (urllib.error.URLError, OSError) as exc:
            return f"HTTP query failed: {exc}"
        if seen != "1":
            return "keep-alive query not running (another server on this port?)"
        if not process.port_open(ch.host, ch.native_port):
            return f"native port {ch.native_port} not listening"
        return None

    def probe_external(self) -> str | None:
        try:
            self.http("SELECT 1")
        except (urllib.error.URLError, OSError) as exc:
            return f"HTTP query failed: {exc}"
        return None

    def before_stop(self, pid: int) -> None:
        token = self._token()
        if token is None:
            return
        try:
            self.http(
                f"KILL QUERY WHERE query LIKE '%{token}%' AND query NOT LIKE '%KILL QUERY%' SYNC",
                timeout=10,
            )
        except (urllib.error.URLError, OSError):
            return  # fall back to SIGTERM
        # Exits at once unless clients hold keep-alive connections (then the base class's
        # SIGTERM ends the lingering listener shutdown; the data is on disk by then).
        process.wait_for_exit(pid, 1.0)
