"""One Kafka message in, its fates out: the decision plus row encoding, behind the
outage/unprocessable line (pure apart from the injected client lookup).

Invariants:
- `process_message` never raises for a message: whatever the bytes and headers, the result
  is `MessageFates` (rows to buffer and dead letters to send) or `Retry` (an outage);
- nothing is applied before the whole message is decided, so a failure half-way through
  leaves no partial effects: the message gets one `unprocessable` dead letter instead;
- an `unprocessable` letter carries this message's own coordinates (its replay headers,
  if any, may be what failed) and the error class in its detail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analytics_core.dead_letter import DeadLetter, ReplayKeys
from analytics_core.event_contract import Origin
from analytics_core.reasons import Reason
from analytics_core.settings import DEFAULT_TARGET
from router.decision import ClientLookup, RawMessage, Retry, Routed, decide
from router.failures import describe, is_outage
from router.rows import PendingRow, pending_row


@dataclass(slots=True)
class RoutedRow:
    """An encoded row and the client database it goes to."""

    database: str
    client_id: str
    row: PendingRow
    target: str = DEFAULT_TARGET  # the ClickHouse target holding `database`


@dataclass(slots=True)
class MessageFates:
    """Every event of one message, routed or dead-lettered (at least one of either)."""

    rows: list[RoutedRow] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    unprocessable: BaseException | None = None  # set when `letters` is its one letter

    @property
    def events(self) -> int:
        return len(self.rows) + len(self.letters)


@dataclass(frozen=True, slots=True)
class ProcessingContext:
    """What is the same for every message of one poll."""

    now_iso: str
    router_version: str
    replay_keys: ReplayKeys


def process_message(
    msg: RawMessage, lookup: ClientLookup, ctx: ProcessingContext, produced_ms: int
) -> MessageFates | Retry:
    """`produced_ms`: the message's Kafka timestamp, the latency origin of events that have
    no `sent_at`."""
    try:
        decision = decide(
            msg,
            lookup,
            now_iso=ctx.now_iso,
            router_version=ctx.router_version,
            replay_keys=ctx.replay_keys,
        )
        if type(decision) is Retry:
            return decision
        assert type(decision) is list
        rows: list[RoutedRow] = []
        letters: list[DeadLetter] = []
        for fate in decision:
            if type(fate) is Routed:
                sent = fate.event.sent_at_ms
                row = pending_row(
                    fate,
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    sent if sent is not None else produced_ms,
                    msg.received_ms,
                )
                rows.append(RoutedRow(fate.database, fate.client_id, row, fate.target))
            else:
                letters.append(fate.letter)  # type: ignore[union-attr]
        return MessageFates(rows, letters, None)
    except Exception as exc:  # the line is drawn in router.failures, nowhere else
        if is_outage(exc):
            return Retry(f"while processing the message: {describe(exc)}")
        return unprocessable(msg, exc, ctx)


def unprocessable(msg: RawMessage, exc: BaseException, ctx: ProcessingContext) -> MessageFates:
    source = Origin(msg.topic, msg.partition, msg.offset)
    letter = DeadLetter(
        reason=Reason.UNPROCESSABLE,
        detail=describe(exc),
        origin=source,
        source=source,
        batch_index=None,
        client_id=None,
        event_id=None,
        first_failed_at=ctx.now_iso,
        attempt=1,
        router_version=ctx.router_version,
    )
    return MessageFates(letters=[letter], unprocessable=exc)
