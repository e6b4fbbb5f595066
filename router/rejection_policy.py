"""What happens to a batch a client's database refused (pure).

Invariants:
- a rejection is about one client's database, not an outage: only that batch waits
  (exponential backoff), other clients keep flowing;
- after `max_attempts` the batch's events become `destination_error` dead letters, one per
  row, with the ORIGINAL message bytes (read back from Kafka, where they stay until their
  offsets are committed); a row whose original already left Kafka (retention) is
  dead-lettered as its routed row (a JSON object of its columns) instead, and the detail
  says so;
- a letter's detail names no other client: ClickHouse's "Maybe you meant <database>.<table>?"
  hint, which may name another client's database, is cut from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from analytics_core.dead_letter import DeadLetter
from analytics_core.event_contract import Origin
from analytics_core.reasons import Reason
from router.backoff import delay_for_attempt
from router.buffers import Batch
from router.rows import read_row


@dataclass(frozen=True, slots=True)
class RetryBatch:
    delay_s: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Dead-letter the batch's events (`destination_error`)."""


def after_rejection(
    attempts: int, max_attempts: int, backoff_s: float, backoff_max_s: float
) -> RetryBatch | GiveUp:
    """`attempts`: how many times the batch was refused, this time included."""
    if attempts < max_attempts:
        return RetryBatch(delay_for_attempt(attempts, backoff_s, backoff_max_s))
    return GiveUp()


@dataclass(frozen=True, slots=True)
class LetterToSend:
    """A dead letter, the value it carries, and the consumed message it acknowledges."""

    value: bytes | None
    letter: DeadLetter
    partition: int
    offset: int


_NAME_HINT = re.compile(r"\s*Maybe you meant [^?]*\?\.?")


def without_name_hints(detail: str) -> str:
    """ClickHouse's error text without its "Maybe you meant ...?" suggestions."""
    return _NAME_HINT.sub("", detail)


def rejected_letters(
    batch: Batch,
    originals: dict[tuple[int, int], bytes | None],
    *,
    topic: str,
    detail: str,
    now_iso: str,
    router_version: str,
) -> list[LetterToSend]:
    """One `destination_error` letter per row of `batch`; `originals` maps (partition,
    offset) to the message value read back from Kafka."""
    out = []
    detail = without_name_hints(detail)
    for r in batch.rows.rows():
        key = (r.partition, r.offset)
        if key in originals:
            value, why = originals[key], detail
        else:  # gone from Kafka (retention) before its dead letter: keep what we have
            value = read_row(r.line).as_json()
            why = f"{detail}; original message no longer in Kafka, value is the routed row"
        event_id, attempt = r.letter_fields()
        letter = DeadLetter(
            reason=Reason.DESTINATION_ERROR,
            detail=why,
            origin=r.source_origin(topic),
            source=Origin(topic, r.partition, r.offset),
            batch_index=r.batch_index,
            client_id=batch.client_id,
            event_id=event_id,
            first_failed_at=now_iso,
            attempt=attempt,
            router_version=router_version,
        )
        out.append(LetterToSend(value, letter, r.partition, r.offset))
    return out
