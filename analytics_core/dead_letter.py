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
and `replay-first-failed-at` so the router keeps identity and counts attempts, and
`replay-signature`: hex HMAC-SHA256, under the replay key (`PIPELINE_REPLAY_KEY`) that only
the router and the reprocessing job hold, of those six values and the message value.
Producers can set any header, so the router honours replay headers only with a valid
signature; a message with any `replay-*` header that is unsigned, forged, duplicated,
unknown or out of range is dead-lettered whole as `invalid_replay` (never routed under a
borrowed identity, never dropped).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from analytics_core.event_contract import MAX_BATCH_EVENTS, Origin
from analytics_core.reasons import Reason

ENVELOPE_VERSION = "1"
MAX_DETAIL = 1000
MAX_PARTITION = 2**31 - 1
MAX_OFFSET = 2**63 - 1
MAX_ATTEMPT = 65_534  # events_base.attempt is UInt16 and a failed replay stores attempt + 1
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: int() would take Unicode digits, '+', '_'
_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")

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
            origin=_origin(h, "dl-origin-"),
            source=_origin(h, "dl-source-"),
            batch_index=_batch_index(h.get("dl-batch-index", "")),
            client_id=h.get("dl-client-id") or None,
            event_id=h.get("dl-event-id") or None,
            first_failed_at=h["dl-first-failed-at"],
            attempt=uint(h["dl-attempt"], MAX_ATTEMPT, "dl-attempt", minimum=1),
            router_version=h.get("dl-router-version", ""),
        )
    except (KeyError, ValueError) as exc:
        raise EnvelopeError(f"malformed dead-letter envelope: {exc}") from None


def uint(text: str, maximum: int, name: str, *, minimum: int = 0) -> int:
    """A header's decimal value, ASCII digits only, within [minimum, maximum]."""
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"{name} {text[:40]!r} is not a decimal number")
    value = int(text)
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} {value} is outside {minimum}..{maximum}")
    return value


def _origin(h: dict[str, str], prefix: str) -> Origin:
    topic = h[prefix + "topic"]
    if not _TOPIC.fullmatch(topic):
        raise ValueError(f"{prefix}topic {topic[:60]!r} is not a Kafka topic name")
    return Origin(
        topic,
        uint(h[prefix + "partition"], MAX_PARTITION, prefix + "partition"),
        uint(h[prefix + "offset"], MAX_OFFSET, prefix + "offset"),
    )


def _batch_index(text: str) -> int | None:
    return uint(text, MAX_BATCH_EVENTS - 1, "batch index") if text else None


@dataclass(frozen=True, slots=True)
class ReplayContext:
    """Identity a replayed message carries back into the router (signature verified)."""

    origin: Origin
    batch_index: int | None
    attempt: int
    first_failed_at: str


@dataclass(frozen=True, slots=True)
class InvalidReplay:
    """Replay headers the router must not honour: the message is dead-lettered whole."""

    detail: str


@dataclass(frozen=True, slots=True)
class ReplayKeys:
    """HMAC keys of replay signatures: `current` signs and verifies; `previous` (a rotated
    key) still verifies, so replays in flight during a key rotation are honoured."""

    current: bytes
    previous: bytes | None = None

    def __repr__(self) -> str:
        return "ReplayKeys(***)"


REPLAY_FIELDS = (
    "replay-origin-topic",
    "replay-origin-partition",
    "replay-origin-offset",
    "replay-batch-index",
    "replay-attempt",
    "replay-first-failed-at",
)
REPLAY_SIGNATURE = "replay-signature"
_REPLAY_PREFIX = "replay-"
_REPLAY_HEADERS = frozenset((*REPLAY_FIELDS, REPLAY_SIGNATURE))


def has_replay_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> bool:
    """Whether any header claims a replay (`read_replay_context` then decides what it is)."""
    return bool(headers) and any(key.startswith(_REPLAY_PREFIX) for key, _ in headers)  # type: ignore[union-attr]


def replay_signature(key: bytes, fields: Sequence[bytes], value: bytes | None) -> bytes:
    """Hex HMAC-SHA256 of the replay identity and the message value (length-prefixed, so
    no two different inputs share an encoding)."""
    mac = hmac.new(key, b"analytics-replay-v1", hashlib.sha256)
    for f in fields:
        mac.update(len(f).to_bytes(4, "big") + f)
    mac.update(b"\x00" if value is None else b"\x01" + len(value).to_bytes(4, "big") + value)
    return mac.hexdigest().encode("ascii")


def replay_headers(dl: DeadLetter, value: bytes | None, keys: ReplayKeys) -> Headers:
    fields = [
        dl.origin.topic.encode(),
        str(dl.origin.partition).encode(),
        str(dl.origin.offset).encode(),
        ("" if dl.batch_index is None else str(dl.batch_index)).encode(),
        str(dl.attempt).encode(),
        dl.first_failed_at.encode(),
    ]
    headers = list(zip(REPLAY_FIELDS, fields, strict=True))
    headers.append((REPLAY_SIGNATURE, replay_signature(keys.current, fields, value)))
    return headers


def read_replay_context(
    headers: Sequence[tuple[str, bytes | None]] | None,
    value: bytes | None,
    keys: ReplayKeys,
) -> ReplayContext | InvalidReplay | None:
    """The verified replay identity of a message, None for a first-time message (no
    `replay-*` header at all), or why its replay headers can not be honoured."""
    if not headers:
        return None
    found: dict[str, bytes] = {}
    for key, raw in headers:
        if not key.startswith(_REPLAY_PREFIX):
            continue
        if key not in _REPLAY_HEADERS:
            return InvalidReplay(f"unknown replay header {key[:60]!r}")
        if key in found:
            return InvalidReplay(f"replay header {key!r} appears more than once")
        found[key] = b"" if raw is None else raw
    if not found:
        return None
    missing = [k for k in (*REPLAY_FIELDS, REPLAY_SIGNATURE) if k not in found]
    if missing:
        return InvalidReplay("replay headers incomplete, missing " + ", ".join(missing))
    fields = [found[k] for k in REPLAY_FIELDS]
    signature = found[REPLAY_SIGNATURE]
    candidates = [keys.current] if keys.previous is None else [keys.current, keys.previous]
    if not any(
        hmac.compare_digest(replay_signature(k, fields, value), signature) for k in candidates
    ):
        return InvalidReplay(
            "replay-signature does not match: the headers were not written by the "
            "reprocessing job with this router's PIPELINE_REPLAY_KEY"
        )
    try:
        text = {k: found[k].decode("utf-8") for k in REPLAY_FIELDS}
        first_failed_at = text["replay-first-failed-at"]
        if len(first_failed_at) > 40 or datetime.fromisoformat(first_failed_at).tzinfo is None:
            raise ValueError(f"replay-first-failed-at {first_failed_at[:40]!r} is not RFC 3339")
        return ReplayContext(
            origin=_origin(text, "replay-origin-"),
            batch_index=_batch_index(text["replay-batch-index"]),
            attempt=uint(text["replay-attempt"], MAX_ATTEMPT - 1, "replay-attempt", minimum=1),
            first_failed_at=first_failed_at,
        )
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        return InvalidReplay(f"malformed replay header: {exc}")
