"""The fate of one dead letter: a pure function of the letter, its client's status now,
the policy and the clock. No I/O; unit-tested without servers.

Order of the rules (first match wins):
1. reason not in RECOVERABLE                      -> park (permanent_reason)
2. attempt >= policy.max_attempts                 -> park (max_attempts): never loops
3. no client id on a recoverable letter           -> park (no_client_id)
4. client active                                  -> replay
5. client deprovisioning / deprovisioned          -> park (client_gone): never active again
6. waiting longer than policy.max_wait            -> park (waited_too_long)
7. otherwise (pending, failed, not registered)    -> defer
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from analytics_core.clients import ClientStatus
from analytics_core.dead_letter import DeadLetter
from analytics_core.reasons import RECOVERABLE, Reason

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_MAX_WAIT = timedelta(days=7)
UNREADABLE_ENVELOPE = "unreadable_envelope"  # reason stored when the envelope can not be read


class ParkCause(StrEnum):
    PERMANENT_REASON = "permanent_reason"
    MAX_ATTEMPTS = "max_attempts"
    NO_CLIENT_ID = "no_client_id"
    CLIENT_GONE = "client_gone"
    WAITED_TOO_LONG = "waited_too_long"
    UNREADABLE_ENVELOPE = "unreadable_envelope"


@dataclass(frozen=True)
class Policy:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_wait: timedelta = DEFAULT_MAX_WAIT

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


@dataclass(frozen=True, slots=True)
class Replay:
    pass


@dataclass(frozen=True, slots=True)
class Park:
    cause: ParkCause
    detail: str


@dataclass(frozen=True, slots=True)
class Defer:
    detail: str


Verdict = Replay | Park | Defer


def parse_failed_at(text: str) -> datetime | None:
    """`dl-first-failed-at` (RFC 3339, 'Z') as an aware datetime; None when unreadable."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def classify(
    letter: DeadLetter, client: ClientStatus | None, policy: Policy, now: datetime
) -> Verdict:
    """`client` is the client's status now, None when it is not in the registry."""
    if letter.reason not in RECOVERABLE:
        return Park(ParkCause.PERMANENT_REASON, f"{letter.reason.value} does not heal by itself")
    if letter.attempt >= policy.max_attempts:
        return Park(
            ParkCause.MAX_ATTEMPTS,
            f"failed {letter.attempt} times; the limit is {policy.max_attempts}",
        )
    if not letter.client_id:
        return Park(ParkCause.NO_CLIENT_ID, f"{letter.reason.value} letter without a client id")
    if client is ClientStatus.ACTIVE:
        return Replay()
    if client in (ClientStatus.DEPROVISIONING, ClientStatus.DEPROVISIONED):
        return Park(ParkCause.CLIENT_GONE, f"client {letter.client_id} is {client.value}")
    state = client.value if client is not None else "not registered"
    failed_at = parse_failed_at(letter.first_failed_at)
    if failed_at is not None and now - failed_at > policy.max_wait:
        return Park(
            ParkCause.WAITED_TOO_LONG,
            f"client {letter.client_id} is still {state} {_days(now - failed_at)} after the "
            f"first failure; the limit is {_days(policy.max_wait)}",
        )
    return Defer(f"client {letter.client_id} is {state}; re-checked on every run")


def _days(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 86400:.1f} days"


@dataclass(frozen=True)
class Selection:
    """A run limited to one client and/or one reason; empty = everything."""

    client_id: str | None = None
    reason: Reason | None = None

    @property
    def filtered(self) -> bool:
        return self.client_id is not None or self.reason is not None

    def selects(self, letter: DeadLetter | None) -> bool:
        """Unreadable envelopes (None) belong only to unfiltered runs."""
        if not self.filtered:
            return True
        if letter is None:
            return False
        if self.client_id is not None and letter.client_id != self.client_id:
            return False
        return self.reason is None or letter.reason is self.reason

    def describe(self) -> str:
        parts = []
        if self.client_id is not None:
            parts.append(f"client {self.client_id}")
        if self.reason is not None:
            parts.append(f"reason {self.reason.value}")
        return " and ".join(parts) if parts else "all dead letters"
