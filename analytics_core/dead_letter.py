"""Dead-letter envelope, version 1: how a failed message travels on `shared_dead_letter`.

Invariant: the Kafka message value is the ORIGINAL bytes, unchanged; everything
the pipeline knows about the failure travels in headers (all UTF-8 text):

| header               | meaning                                                        |
|----------------------|----------------------------------------------------------------|
| dl-version           | envelope version, "1"                                          |
| dl-reason            | reason code (analytics_core.reasons.Reason)                    |
| dl-detail            | human-readable detail, at most 1000 characters                 |
| dl-origin-topic      | topic/partition/offset where the message FIRST entered         |
| dl-origin-partition  |   (kept across replays, so derived event ids stay stable)      |
| dl-origin-offset     |                                                                |
| dl-source-topic      | topic/partition/offset of the copy that failed this time       |
| dl-source-partition  |                                                                |
| dl-source-offset     |                                                                |
| dl-batch-index       | index of the failed event inside a batch message ("" = whole)  |
| dl-client-id         | client id when known                                           |
| dl-event-id          | event id when known                                            |
| dl-first-failed-at   | RFC 3339 UTC time of the first failure                         |
| dl-attempt           | 1 on the first failure, +1 on every replay that fails again    |
| dl-router-version    | version of the router that wrote it                            |

A replay re-submitted to `shared_raw_events` by the reprocessing job carries
`replay-origin-topic/partition/offset`, `replay-batch-index`, `replay-attempt`
and `replay-first-failed-at` so the router keeps identity and counts attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from analytics_core.event_contract import Origin
from analytics_core.reasons import Reason

ENVELOPE_VERSION = "1"
MAX_DETAIL = 1000

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: Reason
    detail: str
    origin: Origin
    source: Origin
    batch_index: int | None
    client_id: str | None
    event_id: str | None
    first_failed_at: str
    attempt: int
    router_version: str

    def headers(self) -> Headers:
        def b(v: object) -> bytes:
            return ("" if v is None else str(v)).encode("utf-8")

        return [
            ("dl-version", b(ENVELOPE_VERSION)),
            ("dl-reason", b(self.reason.value)),
            ("dl-detail", b(self.detail[:MAX_DETAIL])),
            ("dl-origin-topic", b(self.origin.topic)),
            ("dl-origin-partition", b(self.origin.partition)),
            ("dl-origin-offset", b(self.origin.offset)),
            ("dl-source-topic", b(self.source.topic)),
            ("dl-source-partition", b(self.source.partition)),
            ("dl-source-offset", b(self.source.offset)),
            ("dl-batch-index", b(self.batch_index)),
            ("dl-client-id", b(self.client_id)),
            ("dl-event-id", b(self.event_id)),
            ("dl-first-failed-at", b(self.first_failed_at)),
            ("dl-attempt", b(self.attempt)),
            ("dl-router-version", b(self.router_version)),
        ]


class EnvelopeError(ValueError):
    """A message on the dead-letter topic lacks a readable envelope."""


def header_map(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers or ():
        out[key] = "" if value is None else value.decode("utf-8", errors="replace")
    return out


def read_dead_letter(headers: Sequence[tuple[str, bytes | None]] | None) -> DeadLetter:
    h = header_map(headers)
    if h.get("dl-version") != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported dead-letter envelope version {h.get('dl-version')!r}")
    try:
        reason = Reason(h["dl-reason"])
        return DeadLetter(
            reason=reason,
            detail=h.get("dl-detail", ""),
            origin=Origin(
                h["dl-origin-topic"], int(h["dl-origin-partition"]), int(h["dl-origin-offset"])
            ),
            source=Origin(
                h["dl-source-topic"], int(h["dl-source-partition"]), int(h["dl-source-offset"])
            ),
            batch_index=int(h["dl-batch-index"]) if h.get("dl-batch-index") else None,
            client_id=h.get("dl-client-id") or None,
            event_id=h.get("dl-event-id") or None,
            first_failed_at=h["dl-first-failed-at"],
            attempt=int(h["dl-attempt"]),
            router_version=h.get("dl-router-version", ""),
        )
    except (KeyError, ValueError) as exc:
        raise EnvelopeError(f"malformed dead-letter envelope: {exc}") from None


@dataclass(frozen=True, slots=True)
class ReplayContext:
    """Identity a replayed message carries back into the router."""

    origin: Origin
    batch_index: int | None
    attempt: int
    first_failed_at: str


def replay_headers(dl: DeadLetter) -> Headers:
    return [
        ("replay-origin-topic", dl.origin.topic.encode()),
        ("replay-origin-partition", str(dl.origin.partition).encode()),
        ("replay-origin-offset", str(dl.origin.offset).encode()),
        ("replay-batch-index", ("" if dl.batch_index is None else str(dl.batch_index)).encode()),
        ("replay-attempt", str(dl.attempt).encode()),
        ("replay-first-failed-at", dl.first_failed_at.encode()),
    ]


def read_replay_context(headers: Sequence[tuple[str, bytes | None]] | None) -> ReplayContext | None:
    """The replay identity of a message, or None for a first-time message.

    Malformed replay headers are treated as a first-time message: the event is
    still routed or dead-lettered, never lost.
    """
    if not headers:
        return None
    h = header_map(headers)
    if "replay-origin-topic" not in h:
        return None
    try:
        return ReplayContext(
            origin=Origin(
                h["replay-origin-topic"],
                int(h["replay-origin-partition"]),
                int(h["replay-origin-offset"]),
            ),
            batch_index=int(h["replay-batch-index"]) if h.get("replay-batch-index") else None,
            attempt=int(h["replay-attempt"]),
            first_failed_at=h["replay-first-failed-at"],
        )
    except (KeyError, ValueError):
        return None
