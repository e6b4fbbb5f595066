"""Open files for CAPTURE_MAX_CONNECTIONS: each client connection is a file descriptor.

granian stops accepting at its connection limit (idle keep-alive connections count, the
rest wait in the kernel's accept queue), so the limit must be reachable: a process whose
descriptor limit is below it fails to accept (EMFILE) long before. `plan` is the pure
decision, `apply` reads and raises the process's soft limit (before granian forks its
worker, which inherits it).

Invariant: the connection limit in force leaves RESERVED_FILES descriptors for Kafka,
Redis, PostgreSQL, logs and libraries. An operator's explicit CAPTURE_MAX_CONNECTIONS is
never lowered (start-up fails with what to change); the default is lowered to fit, with
a warning.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
from dataclasses import dataclass

from analytics_core.settings import SettingsError
from capture.config import CaptureSettings

log = logging.getLogger("capture")

RESERVED_FILES = 256


@dataclass(frozen=True, slots=True)
class OpenFilesPlan:
    soft_limit: int  # the soft RLIMIT_NOFILE to set (the current one when it suffices)
    max_connections: int
    warning: str | None = None


def plan(wanted: int, explicit: bool, soft: int, hard: int) -> OpenFilesPlan:
    """`hard` < 0 means unlimited (RLIM_INFINITY)."""
    needed = wanted + RESERVED_FILES
    if soft >= needed:
        return OpenFilesPlan(soft, wanted)
    if hard < 0 or hard >= needed:
        return OpenFilesPlan(needed, wanted)
    fits = hard - RESERVED_FILES
    if explicit or fits < 16:
        raise SettingsError(
            f"CAPTURE_MAX_CONNECTIONS={wanted} needs {needed} open files, and the hard limit "
            f"is {hard}: raise it (ulimit -Hn, LimitNOFILE= in systemd, --ulimit nofile= in "
            f"Docker) or set CAPTURE_MAX_CONNECTIONS to at most {max(fits, 0)}"
        )
    return OpenFilesPlan(
        hard,
        fits,
        f"the open-files limit is {hard}: at most {fits} connections instead of {wanted}; "
        "raise the hard limit for more",
    )


def apply(wanted: int, explicit: bool) -> int:
    """Raise the soft limit as planned; returns the connection limit to use."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    decided = plan(wanted, explicit, soft, -1 if hard == resource.RLIM_INFINITY else hard)
    if decided.soft_limit != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (decided.soft_limit, hard))
    if decided.warning:
        log.warning(decided.warning)
    return decided.max_connections


def fit(settings: CaptureSettings) -> CaptureSettings:
    """The settings with the connection limit in force (`apply`'s)."""
    connections = apply(settings.max_connections, settings.max_connections_explicit)
    return dataclasses.replace(settings, max_connections=connections)
