"""The shared life cycle of one local server: preflight, launch, readiness, stop, status."""

from __future__ import annotations

import logging
import re
import shutil
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from analytics_core.settings import Settings

from . import process

if TYPE_CHECKING:
    from .options import Options

log = logging.getLogger("devstack")


class StackError(RuntimeError):
    """A local service could not be started/stopped; the message names it and its log file."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    managed: bool  # False: DEVSTACK_SERVICES leaves it to an external server
    address: str
    pid: int | None
    healthy: bool
    detail: str
    log_path: Path | None
    rss_bytes: int = 0  # the server process and its children


@dataclass(frozen=True)
class Port:
    port: int
    env_var: str  # the variable that moves it, for error messages


class Service(ABC):
    # The instance name (directory, pid and log file, status row): the family name for
    # one-instance services, e.g. "kafka-2" or "clickhouse-ch2" for the others.
    name: str
    family: ClassVar[str]  # postgres, redis, kafka or clickhouse
    stop_signal: ClassVar[int] = signal.SIGTERM
    stop_timeout: ClassVar[float] = 30.0
    # Lines in the log (written since launch) that mean start-up failed for good.
    fatal_patterns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: Settings, options: Options) -> None:
        self.settings = settings
        self.options = options
        self._log_offset = 0
        self._t0 = time.monotonic()

    # -- layout -------------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return self.settings.state_dir / self.name

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.dir / f"{self.name}.pid"

    # -- per-service parts --------------------------------------------------------------------
    @abstractmethod
    def address(self) -> str: ...

    @abstractmethod
    def ports(self) -> list[Port]: ...

    @abstractmethod
    def markers(self) -> list[str]:
        """Substrings of /proc/<pid>/cmdline that prove the pid is the process we started."""

    def preflight(self) -> None:
        """Check that the binaries/tools exist; raise StackError with what to install."""
        return None

    @abstractmethod
    def launch(self) -> None:
        """Prepare config/data and start the server (must not block until ready)."""

    @abstractmethod
    def probe(self) -> str | None:
        """None when the server really answers, else a short reason."""

    def probe_external(self) -> str | None:
        """Health of a server devstack does not manage (DEVSTACK_SERVICES leaves it out)."""
        return self.probe()

    def after_ready(self) -> None:
        """Provisioning once it answers (roles, databases, topics)."""
        return None

    def before_stop(self, pid: int) -> None:
        """A gentler stop than a signal, when the service has one."""
        return None

    # -- life cycle ---------------------------------------------------------------------------
    def pid(self) -> int | None:
        return process.owned_pid(self.pid_path, self.markers())

    def fail(self, what: str, *, with_log: bool = True) -> StackError:
        msg = f"{self.name}: {what}"
        if with_log:
            msg += f"\n  log file: {self.log_path}"
            last = process.tail(self.log_path, 15)
            if last:
                msg += "\n  last log lines:\n" + "\n".join("    " + ln for ln in last.splitlines())
        return StackError(msg)

    def check_can_start(self) -> None:
        """Tools present and ports free; raises StackError naming the service and port."""
        self.preflight()
        for p in self.ports():
            if process.port_in_use("127.0.0.1", p.port):
                raise self.fail(
                    f"port {p.port} is already in use by another process "
                    f"(stop it, or move {self.name} with {p.env_var})",
                    with_log=False,
                )

    def begin(self) -> bool:
        """Launch the server unless it already runs (then it is adopted); never waits.

        True if launched now. `wait_all` then waits for readiness.
        """
        self._t0 = time.monotonic()
        if self.pid() is not None:
            return False
        self.check_can_start()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log.info("starting %s at %s ...", self.name, self.address())
        self.launch()
        return True

    def cleanup_failed_start(self) -> None:
        """Do not leave a half-started server behind (it would hold ports and locks)."""
        pid = self.pid()
        if pid is not None:
            process.terminate(pid, sig=self.stop_signal, timeout=self.stop_timeout)
        process.remove_file(self.pid_path)

    def startup_failure(self) -> str | None:
        reason = first_fatal_line(self._new_log_text(), self.fatal_patterns)
        if reason is not None:
            return reason
        pid = process.read_pid(self.pid_path)
        if pid is not None and not process.is_alive(pid):
            return f"process {pid} exited during start-up"
        return None

    def _new_log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                return fh.read(256 * 1024).decode(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> bool:
        """Stop the process devstack started (data is kept). True if something was stopped."""
        pid = self.pid()
        if pid is None:
            other = process.read_pid(self.pid_path)
            if other is not None and process.is_alive(other):
                # Alive but not matching this configuration (e.g. other ports than at `up`):
                # never signal it, and keep the pid file so the right settings still can.
                log.warning(
                    "%s: pid file %s names running process %d, which does not match these "
                    "settings (%s); not stopping it. Run down with the settings used for up.",
                    self.name,
                    self.pid_path,
                    other,
                    self.address(),
                )
                return False
            process.remove_file(self.pid_path)
            return False
        t0 = time.monotonic()
        self.before_stop(pid)
        killed = False
        if process.is_alive(pid):
            killed = process.terminate(pid, sig=self.stop_signal, timeout=self.stop_timeout)
        process.remove_file(self.pid_path)
        how = " (had to SIGKILL)" if killed else ""
        log.info("stopped %s (pid %d) in %.1fs%s", self.name, pid, time.monotonic() - t0, how)
        return True

    def wipe(self) -> None:
        """Delete this service's state (call after stop)."""
        if self.dir.is_symlink():
            self.dir.unlink()
        elif self.dir.exists():
            shutil.rmtree(self.dir)

    def status(self, managed: bool) -> ServiceStatus:
        pid = self.pid() if managed else None
        reason = self.probe() if managed else self.probe_external()
        return ServiceStatus(
            name=self.name,
            managed=managed,
            address=self.address(),
            pid=pid,
            healthy=reason is None,
            detail="ok" if reason is None else reason,
            log_path=self.log_path if managed else None,
            rss_bytes=sum(process.rss_bytes(p) for p in self.pids()) if pid else 0,
        )

    def pids(self) -> list[int]:
        """The server process and its children (for memory totals)."""
        pid = self.pid()
        return [] if pid is None else [pid, *process.descendants(pid)]


def start_all(services: Sequence[Service]) -> list[bool]:
    """Launch every service at once, then wait until all answer; True per newly launched one.

    Parallel, because a KRaft quorum of several nodes elects no leader until a majority
    runs, and independent servers start faster side by side. Readiness is polled for all of
    them together, so one that dies during start-up fails the whole call at once (its name,
    reason and log file in the StackError) instead of after the others' timeout. Provisioning
    (`after_ready`) runs in the given order once every service answers.
    """
    with ThreadPoolExecutor(max(1, len(services)), thread_name_prefix="devstack-start") as pool:
        futures = [pool.submit(svc.begin) for svc in services]
        errors = [f.exception() for f in futures]
    for svc, err in zip(services, errors, strict=True):
        if err is not None:
            for other, other_err in zip(services, errors, strict=True):
                if other_err is None and other is not svc:
                    log.info("%s was started; `python -m devstack down` stops it", other.name)
            raise err
    launched = [f.result() for f in futures]
    timeout = max(svc.options.start_timeout for svc in services) if services else 0.0
    deadline = time.monotonic() + timeout
    pending = list(zip(services, launched, strict=True))
    while pending:
        still = []
        for svc, new in pending:
            if svc.probe() is None:
                continue
            reason = svc.startup_failure() if new else None
            if reason:
                svc.cleanup_failed_start()
                raise svc.fail(f"failed to start: {reason}")
            still.append((svc, new))
        pending = still
        if pending and time.monotonic() >= deadline:
            svc, new = pending[0]
            reason = svc.probe()
            if new:
                svc.cleanup_failed_start()
                raise svc.fail(f"not ready after {timeout:.0f}s: {reason}")
            raise svc.fail(
                f"already running (pid {svc.pid()}) but not answering on {svc.address()}: "
                f"{reason}; try `python -m devstack down --services {svc.name}`"
            )
        if pending:
            time.sleep(0.2)
    for svc, new in zip(services, launched, strict=True):
        svc.after_ready()
        if new:
            log.info("%s ready in %.1fs (pid %s)", svc.name, time.monotonic() - svc._t0, svc.pid())
        else:
            log.info("%s already running at %s (pid %s)", svc.name, svc.address(), svc.pid())
    return launched


def first_fatal_line(text: str, patterns: tuple[str, ...]) -> str | None:
    """The log line that says why a start failed: the line of the first pattern (in the
    order given, so a root cause listed first wins over the exit line it leads to)."""
    for pattern in patterns:
        m = re.search(pattern, text, re.MULTILINE)
        if m:
            line_start = text.rfind("\n", 0, m.start()) + 1
            line_end = text.find("\n", m.end())
            return text[line_start : line_end if line_end >= 0 else None].strip()
    return None
