"""A private Docker engine for the deploy tests: its own `dockerd` under the state dir.

Never talks to any other Docker daemon: every command gets DOCKER_HOST pointing at this
engine's socket. The daemon runs without the default bridge and without touching iptables
(`--bridge=none --iptables=false`), so it cannot disturb another engine on the machine;
builds therefore use the host network, and compose networks get a fixed bridge name that
the test lets through the host's FORWARD chain only while it runs (see `forwarding`).
Images stay in the data root between runs (the build cache); containers, networks and
volumes are removed by the test's clean-up, and `stop()` ends the daemon.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REQUIRED_TOOLS = ("dockerd", "docker", "docker-compose", "mmdebstrap")


class EngineError(RuntimeError):
    """The private engine could not be started or a docker command failed."""


def missing_tools() -> list[str]:
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


@dataclass(frozen=True)
class DockerEngine:
    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def pid_file(self) -> Path:
        return self.root / "dockerd.pid"

    @property
    def log_path(self) -> Path:
        return self.root / "dockerd.log"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_HOST"] = f"unix://{self.socket}"
        # The legacy builder works with Debian's docker.io without buildx.
        env["DOCKER_BUILDKIT"] = "0"
        env["COMPOSE_DOCKER_CLI_BUILD"] = "0"
        for name in ("DOCKER_CONTEXT", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY"):
            env.pop(name, None)
        return env

    def run(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 600,
        cwd: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = self.env()
        env.update(extra_env or {})
        proc = subprocess.run(
            list(args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
            raise EngineError(f"`{' '.join(args)}` failed (exit {proc.returncode}):\n{tail}")
        return proc

    def docker(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        return self.run(["docker", *args], check=check, timeout=timeout).stdout

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def responding(self) -> bool:
        if not self.socket.exists():
            return False
        proc = self.run(["docker", "version", "--format", "{{.Server.Version}}"], check=False)
        return proc.returncode == 0

    def start(self, timeout: float = 90) -> None:
        """Start the daemon (or keep the one a previous run of ours left behind)."""
        problems = missing_tools()
        if problems:
            raise EngineError(
                f"missing {', '.join(problems)}: run bin/setup (bin/setup.d/30-deploy.sh "
                "installs docker.io, docker-compose and mmdebstrap)"
            )
        if os.geteuid() != 0:
            raise EngineError("the private Docker engine needs root (dockerd, mmdebstrap)")
        self.root.mkdir(parents=True, exist_ok=True)
        if self._pid() is not None and self.responding():
            return
        argv = [
            "dockerd",
            "-H",
            f"unix://{self.socket}",
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "--pidfile",
            str(self.pid_file),
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--log-level=warn",
        ]
        with open(self.log_path, "ab") as log:
            subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.responding():
                return
            time.sleep(0.5)
        tail = self.log_path.read_text(errors="replace").splitlines()[-20:]
        raise EngineError(f"dockerd did not answer within {timeout:.0f}s:\n" + "\n".join(tail))

    def stop(self, timeout: float = 60) -> None:
        """End our daemon (and with it its containerd); no-op when it is not running."""
        pid = self._pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.3)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(1)
        self._unmount_leftovers()

    def _unmount_leftovers(self) -> None:
        """dockerd leaves its default network namespace (and data-root) mounted: undo that."""
        root = str(self.root.resolve()) + "/"
        with open("/proc/self/mountinfo") as fh:
            points = [line.split()[4] for line in fh]
        for point in sorted((p for p in points if p.startswith(root)), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", *args], capture_output=True, text=True)


@contextlib.contextmanager
def forwarding(bridge: str) -> Iterator[None]:
    """Let traffic between containers on `bridge` through the host's FORWARD chain.

    Needed only when bridged traffic is filtered (br_netfilter loaded) and another engine
    set the FORWARD policy to DROP; the rule names our bridge alone and is removed after.
    """
    rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
    if shutil.which("iptables") is None or _iptables("-C", *rule).returncode == 0:
        yield
        return
    added = _iptables("-I", *rule).returncode == 0
    try:
        yield
    finally:
        if added:
            _iptables("-D", *rule)
