"""bin/setup runs one at a time: bin/dev and bin/test started together on a fresh machine
must not run two apt-gets or two pip installs into one venv at once."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from pathlib import Path

from analytics_core.settings import REPO_ROOT

LOCK = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
LOCK = LOCK / "analytics-pipeline" / "setup.lock"


def lock_is_held() -> bool:
    return subprocess.run(["flock", "-n", str(LOCK), "true"], check=False).returncode != 0


def test_a_second_setup_waits_for_the_first_then_completes() -> None:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    first = os.open(LOCK, os.O_RDWR | os.O_CREAT)  # a setup in progress: flock(1)'s lock
    fcntl.flock(first, fcntl.LOCK_EX)
    try:
        assert lock_is_held()
        second = subprocess.Popen(
            [str(REPO_ROOT / "bin" / "setup")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        assert second.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(second.stderr or []), daemon=True)
        reader.start()
        time.sleep(3)
        # While the first holds the lock, the second has said why it waits and done nothing.
        assert second.poll() is None, lines
        assert len(lines) == 1 and "another bin/setup is running" in lines[0], lines
    finally:
        os.close(first)  # releases the lock
    assert second.wait(timeout=600) == 0, "".join(lines)
    reader.join(timeout=10)
    assert lines[-1].strip() == "[setup] ready", lines
    assert not lock_is_held()  # released with the setup, by no process left behind
