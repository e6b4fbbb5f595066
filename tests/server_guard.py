"""Where the tests may run: bin/test, and the integration fixtures, refuse servers off this
machine unless TEST_EXTERNAL_SERVERS=1 says they are there for testing.

The tests register clients, create ClickHouse databases and Kafka topics, send events to
the shared topics and drop what they made. A shell that exported its production servers'
variables (as "Configuration" in the README shows) would otherwise run all of that there,
silently: bin/test keeps a variable that is already set. Invariant: nothing has been
started or written when the refusal is printed (bin/test checks before `devstack up`).

`python -m tests.server_guard` exits 0 when the tests may run, 2 with what to change when
they may not.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from analytics_core.settings import Settings, SettingsError

ALLOW = "TEST_EXTERNAL_SERVERS"


def refusal(settings: Settings, env: Mapping[str, str]) -> str | None:
    """Why the tests must not run against `settings`, or None."""
    remote = settings.remote_servers()
    if not remote or env.get(ALLOW, "") == "1":
        return None
    listed = "\n".join(f"  {variable}: {host}" for variable, host in remote)
    return (
        "the tests would run against servers that are not on this machine:\n"
        f"{listed}\n"
        "They register clients, create and drop databases and topics, and send events to "
        "the shared topics there.\n"
        "Unset those variables to run on the test stack (bin/test starts its own on "
        f"127.0.0.1), or set {ALLOW}=1 if these servers are for testing."
    )


def main() -> int:
    try:
        problem = refusal(Settings.from_env(), os.environ)
    except SettingsError as exc:
        problem = str(exc)
    if problem is None:
        return 0
    print(f"[test] {problem}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
