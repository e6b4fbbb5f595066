"""The router's decision for one Kafka message: a pure function, no I/O.

raw message + client lookup -> for each event: Routed | DeadLettered, or one
Retry for the whole message. Invariants:
- every event of a message gets exactly one fate, so counts reconcile;
- the target database comes from the client's registry record, never the event;
- a registry outage is a Retry of the whole message (never a dead letter), so an
  outage can not turn good events into dead letters;
- replay headers are honoured only with the reprocessing job's signature; any other
  `replay-*` header dead-letters the whole message as `invalid_replay`, under this
  message's own coordinates, so nobody borrows another event's identity and no message
  is dropped (a signed replay that selects no event is dead-lettered too);
- a message whose headers can not be read (a header name that is not UTF-8) is
  dead-lettered whole as `invalid_headers`: whether it claims a replay can not be told.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from analytics_core.clients import (
    ClientFound,
    ClientStatus,
    LookupResult,
    RegistryUnavailable,
)
from analytics_core.dead_letter import (
    DeadLetter,
    InvalidReplay,
    ReplayKeys,
    read_replay_context,
)
from analytics_core.event_contract import ContractViolation, Origin, ValidEvent, parse_message
from analytics_core.kafka_headers import UnreadableHeaders
from analytics_core.reasons import Reason
from analytics_core.settings import DEFAULT_TARGET


@dataclass(slots=True)  # not frozen: see analytics_core.event_contract
class RawMessage:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] | UnreadableHeaders | None
    received_ms: int


@dataclass(slots=True)  # not frozen: see analytics_core.event_contract
class Routed:
    client_id: str
    database: str
    event: ValidEvent
    origin: Origin
    attempt: int
    target: str = DEFAULT_TARGET  # the ClickHouse target holding `database`


@dataclass(slots=True)  # not frozen: see analytics_core.event_contract
class DeadLettered:
    letter: DeadLetter


@dataclass(frozen=True, slots=True)
class Retry:
    detail: str


Fate = Routed | DeadLettered
Decision = list[Fate] | Retry

ClientLookup = Callable[[str], LookupResult]


def _dead(
    reason: Reason,
    detail: str,
    batch_index: int | None,
    client_id: str | None,
    event_id: str | None,
    ctx: tuple[Origin, Origin, str, int, str],
) -> DeadLettered:
    origin, source, first_failed_at, attempt, router_version = ctx
    return DeadLettered(
        DeadLetter(
            reason=reason,
            detail=detail,
            origin=origin,
            source=source,
            batch_index=batch_index,
            client_id=client_id,
            event_id=event_id,
            first_failed_at=first_failed_at,
            attempt=attempt,
            router_version=router_version,
        )
    )


def decide(
    msg: RawMessage,
    lookup: ClientLookup,
    *,
    now_iso: str,
    router_version: str,
    replay_keys: ReplayKeys,
) -> Decision:
    source = Origin(msg.topic, msg.partition, msg.offset)
    if isinstance(msg.headers, UnreadableHeaders):
        ctx = (source, source, now_iso, 1, router_version)
        return [_dead(Reason.INVALID_HEADERS, msg.headers.detail, None, None, None, ctx)]
    replay = read_replay_context(msg.headers, msg.value, replay_keys) if msg.headers else None
    if replay is None:
        origin, attempt, first_failed_at = source, 1, now_iso
    elif type(replay) is InvalidReplay:
        ctx = (source, source, now_iso, 1, router_version)
        return [_dead(Reason.INVALID_REPLAY, replay.detail, None, None, None, ctx)]
    else:
        assert not isinstance(replay, InvalidReplay)
        origin, attempt, first_failed_at = replay.origin, replay.attempt + 1, replay.first_failed_at
    ctx = (origin, source, first_failed_at, attempt, router_version)

    outcomes = parse_message(msg.value, origin)
    if replay is not None and replay.batch_index is not None:
        # A replayed batch message re-enters with only its failed event selected.
        outcomes = [o for o in outcomes if o.batch_index in (None, replay.batch_index)]
        if not outcomes:
            detail = f"replay-batch-index {replay.batch_index} selects no event of this message"
            return [_dead(Reason.INVALID_REPLAY, detail, None, None, None, ctx)]

    fates: list[Fate] = []
    for outcome in outcomes:
        if type(outcome) is ContractViolation:
            fates.append(
                _dead(
                    outcome.reason,
                    outcome.detail,
                    outcome.batch_index,
                    outcome.client_id,
                    outcome.event_id,
                    ctx,
                )
            )
            continue
        ev: ValidEvent = outcome  # type: ignore[assignment]
        found = lookup(ev.client_id)
        if type(found) is not ClientFound:
            if isinstance(found, RegistryUnavailable):
                return Retry(f"client registry unavailable: {found.detail}")
            fates.append(
                _dead(
                    Reason.UNKNOWN_CLIENT,
                    f"no client {ev.client_id!r} in the registry",
                    ev.batch_index,
                    ev.client_id,
                    ev.event_id,
                    ctx,
                )
            )
            continue
        record = found.record
        # Both sides are ASCII hex (the contract checks the event's, the registry's CHECK and
        # the cache decoder the record's), which compare_digest needs for str.
        if not hmac.compare_digest(ev.credential_hash, record.api_key_hash):
            fates.append(
                _dead(
                    Reason.INVALID_API_KEY,
                    "credential does not match the client's key",
                    ev.batch_index,
                    ev.client_id,
                    ev.event_id,
                    ctx,
                )
            )
        elif record.status is not ClientStatus.ACTIVE or not record.ch_database_name:
            # An active client without a database (a registry row written by hand, or a
            # provisioning that never recorded it) waits like a pending one: recoverable.
            fates.append(
                _dead(
                    Reason.CLIENT_INACTIVE,
                    f"client status is {record.status.value}"
                    if record.status is not ClientStatus.ACTIVE
                    else "client is active but has no ClickHouse database recorded; provision it",
                    ev.batch_index,
                    ev.client_id,
                    ev.event_id,
                    ctx,
                )
            )
        else:
            fates.append(
                Routed(ev.client_id, record.ch_database_name, ev, origin, attempt, record.ch_target)
            )
    return fates
