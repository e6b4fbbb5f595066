"""Where the line runs between an outage and a message that can not be processed.

Invariant: a failure while processing one message is either an OUTAGE (a server or the
process itself is in trouble: the message is retried later, never dead-lettered, so an
outage can not turn good events into dead letters) or a property of that message (a bug
or an input nothing else catches: the message is dead-lettered as `unprocessable`, its
offset committed, and the router goes on, so no input can stop it). This module is the
only place that draws the line.
"""

from __future__ import annotations

import psycopg2
import redis
from confluent_kafka import KafkaException

# Failures of the servers the router talks to, or of the machine it runs on.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # sockets, timeouts, refused connections, files
    MemoryError,  # the process is short of memory, not this message's fault
    redis.ConnectionError,
    redis.TimeoutError,
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    KafkaException,
)


def is_outage(exc: BaseException) -> bool:
    """True: retry the message later. False: dead-letter it as `unprocessable`."""
    return isinstance(exc, OUTAGE_ERRORS)


def describe(exc: BaseException, limit: int = 500) -> str:
    """The error class and the first line of its message (for `dl-detail` and logs)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:limit] if text else type(exc).__name__
