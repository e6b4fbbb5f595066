"""Process plumbing: pid files, ownership checks, port checks, detached spawns, waits."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

# Popen objects of services spawned by this process, so they can be reaped (no zombies)
# when the same process (e.g. a test session) stops them again.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not text:
        return None
    try:
        return int(text[0])
    except ValueError:
        return None


def write_pid(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, path)


def remove_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def cmdline(pid: int) -> str:
    """The process's command line joined by spaces ('' when gone or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (zombies are reaped when ours)."""
    reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # Field 3 (after the parenthesised command name) is the state letter.
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in {"Z", "X"}


def reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)


def owned_pid(pid_file: Path, markers: Sequence[str]) -> int | None:
    """The pid in `pid_file` if that process is alive and its command line has every marker.

    This is how `down` makes sure it only signals processes that devstack started.
    """
    pid = read_pid(pid_file)
    if pid is None or not is_alive(pid):
        return None
    line = cmdline(pid)
    if all(marker in line for marker in markers):
        return pid
    return None


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port (or the address can't be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno in {errno.EADDRINUSE, errno.EACCES}
    return False


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn_detached(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start `argv` in its own session with stdout+stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc.pid


def terminate(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
    """Send `sig`, wait up to `timeout` s, then SIGKILL. True if it had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if wait_for_exit(pid, timeout):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_for_exit(pid, 10.0)
    return True


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.05)
    return not is_alive(pid)


def wait_until(
    probe: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    abort: Callable[[], str | None] | None = None,
) -> bool:
    """Poll `probe` until it is true or `timeout` passes; `abort` returning a message stops early.

    Raises RuntimeError(message) when `abort` reports a failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return True
        if abort is not None:
            reason = abort()
            if reason:
                raise RuntimeError(reason)
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a text file ('' when missing)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except FileNotFoundError:
        return ""
    text = data.decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) held for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def descendants(pid: int) -> list[int]:
    """All live descendants of `pid` (for RSS totals of forking servers like PostgreSQL)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out
