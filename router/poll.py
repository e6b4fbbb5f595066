"""One poll of Kafka messages in: rows appended to client buffers, fates out (pure apart
from the injected client lookup; the Kafka/ClickHouse loop is router.service).

Two paths, one result:
- the **common path**: a message without replay headers whose events all have the common
  shape (`analytics_core.event_contract.common_events`: decoded and type-checked in one C
  pass) and all authenticate: each event is encoded straight into its client's buffer.
  Credentials are checked once per (client, credential) per poll, and nothing per event
  outlives the poll but its encoded row;
- **anything else** (replays, contract violations, unknown clients, wrong keys, inactive
  clients, registry outages, failures) takes `router.processing.process_message`, the
  reference path, which decides every case. The common path accepts only what the
  reference path routes, and encodes the same bytes (tests/unit/test_router_poll.py).

Invariants:
- every consumed message is counted in its partition's segment of this poll
  (router.offsets) with its number of fates, except a message that meets a registry
  outage: its partition is rewound there and skipped for the rest of the poll;
- a message's rows are appended only once all of them are encoded: a failure half-way
  leaves nothing behind, and the reference path then decides the whole message;
- the first client of a poll that is not fresh in process (given `fresh` and
  `lookup_many`) has every client id the poll's messages name looked up together: a flood
  of messages naming unknown clients costs one Redis read, one PostgreSQL query and one
  Redis write per poll, not one of each per message (which held every tenant behind it).
  The ids are only a prefetch: each event is still decided by its parsed client id.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import KafkaError

from analytics_core.clients import ClientFound, ClientStatus, LookupResult
from analytics_core.dead_letter import ReplayKeys, has_replay_headers
from analytics_core.event_contract import CommonEvent, Origin, common_events, derive_event_id
from analytics_core.kafka_headers import UnreadableHeaders, read_headers
from router.accounting import window_of
from router.buffers import ClientBuffers, RowBlock
from router.decision import ClientLookup, RawMessage, Retry
from router.offsets import OffsetTracker, Segment
from router.processing import ProcessingContext, process_message
from router.rejection_policy import LetterToSend
from router.rows import encode_row, memo_string, uuid_of

log = logging.getLogger("router")

# A client id as the contract spells it, as the value of a "client_id" key (a prefetch
# hint: strings that merely look like one cost a lookup, nothing else).
_CLIENT_ID_FIELD = re.compile(rb'"client_id"\s*:\s*"([a-z0-9][a-z0-9_-]{0,47})"')
MAX_PREFETCH_IDS = 10_000


def client_ids_named(values: Sequence[bytes | None], limit: int = MAX_PREFETCH_IDS) -> list[str]:
    """The distinct client ids the messages name, in order of first appearance."""
    seen: dict[str, None] = {}
    for value in values:
        if value is None:
            continue
        for match in _CLIENT_ID_FIELD.finditer(value):
            seen[match.group(1).decode()] = None
            if len(seen) >= limit:
                return list(seen)
    return list(seen)


class KafkaMessage(Protocol):
    """What the loop reads of a consumed message (confluent_kafka.Message)."""

    def error(self) -> KafkaError | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...  # may raise: read_headers
    def timestamp(self) -> tuple[int, int]: ...


@dataclass(frozen=True, slots=True)
class Rewind:
    """A registry outage at this message: its partition restarts here later."""

    partition: int
    offset: int
    detail: str


@dataclass(slots=True)
class PollResult:
    letters: list[LetterToSend] = field(default_factory=list)
    rewinds: list[Rewind] = field(default_factory=list)
    unprocessable: list[tuple[RawMessage, BaseException]] = field(default_factory=list)
    messages: int = 0
    events: int = 0
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset


class PollRouter:
    """Routes the messages of one poll into `buffers`, counting them in `tracker`."""

    def __init__(
        self,
        topic: str,
        buffers: ClientBuffers,
        tracker: OffsetTracker,
        lookup: ClientLookup,
        replay_keys: ReplayKeys,
        router_version: str,
        *,
        fresh: Callable[[str], LookupResult | None] | None = None,
        lookup_many: Callable[[Sequence[str]], Mapping[str, LookupResult]] | None = None,
    ) -> None:
        self.topic = topic
        self.buffers = buffers
        self.tracker = tracker
        self.lookup = lookup
        self.replay_keys = replay_keys
        self.router_version = router_version
        self.fresh = fresh
        self.lookup_many = lookup_many

    def route(
        self, msgs: Sequence[KafkaMessage], received_ms: int, now_iso: str, now: float
    ) -> PollResult:
        """`received_ms`: wall time of the poll (rows' received_at, accounting window);
        `now`: monotonic time (buffers' age)."""
        topic = self.topic
        topic_enc = memo_string(topic)
        tracker = self.tracker
        window = window_of(received_ms)
        ctx = ProcessingContext(now_iso, self.router_version, self.replay_keys)
        out = PollResult()
        # One client lookup and one credential check per poll (~0.1 s, within cache TTLs).
        memo: dict[str, LookupResult] = {}
        blocks: dict[tuple[str, str], RowBlock | None] = {}
        segments: dict[int, Segment] = {}
        skip: set[int] = set()
        rows_added = bytes_added = 0

        prefetch = self.fresh is not None and self.lookup_many is not None

        def lookup(client_id: str) -> LookupResult:
            nonlocal prefetch
            found = memo.get(client_id)
            if found is not None:
                return found
            if prefetch:
                assert self.fresh is not None and self.lookup_many is not None
                found = self.fresh(client_id)
                if found is None:
                    prefetch = False  # once per poll
                    ids = client_ids_named([m.value() for m in msgs if m.error() is None])
                    memo.update(self.lookup_many(ids))
                    found = memo.get(client_id)
            if found is None:
                found = self.lookup(client_id)
            memo[client_id] = found
            return found

        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", extra={"error": str(err)})
                continue
            # Messages without an error always carry their coordinates.
            partition: int = msg.partition()  # type: ignore[assignment]
            if partition in skip:
                continue
            offset: int = msg.offset()  # type: ignore[assignment]
            seg = segments.get(partition)
            if seg is None:
                seg = segments[partition] = tracker.open((topic, partition), offset, window)
            value = msg.value()
            headers = read_headers(msg)
            events = None
            if (
                value is not None
                and not isinstance(headers, UnreadableHeaders)
                and not has_replay_headers(headers)
            ):
                events = common_events(value)
            if events is not None:
                routed = self._encode_common(
                    events, blocks, lookup, msg, partition, offset, topic_enc, received_ms, now
                )
                if routed is not None:
                    for block, line, index, produced in routed:
                        bytes_added += block.add(line, partition, offset, index, produced, seg)
                    rows_added += len(routed)
                    seg.add(offset, len(routed))
                    out.messages += 1
                    out.events += len(routed)
                    continue
            raw = RawMessage(topic, partition, offset, value, headers, received_ms)
            fates = process_message(raw, lookup, ctx, msg.timestamp()[1])
            if isinstance(fates, Retry):
                out.rewinds.append(Rewind(partition, offset, fates.detail))
                memo.clear()
                blocks.clear()
                skip.add(partition)
                continue
            if fates.unprocessable is not None:
                out.unprocessable.append((raw, fates.unprocessable))
            seg.add(offset, fates.events)
            out.messages += 1
            out.events += fates.events
            for r in fates.rows:
                row = r.row
                block = self.buffers.block(r.database, r.client_id, now, r.target)
                bytes_added += block.add(
                    row.line,
                    partition,
                    offset,
                    row.batch_index,
                    row.produced_ms,
                    seg,
                    row.origin,
                )
                rows_added += 1
            for letter in fates.letters:
                out.letters.append(LetterToSend(value, letter, partition, offset))
        self.buffers.added(rows_added, bytes_added)
        out.positions = {p: seg.next for p, seg in segments.items()}
        return out

    def _encode_common(
        self,
        events: list[CommonEvent],
        blocks: dict[tuple[str, str], RowBlock | None],
        lookup: ClientLookup,
        msg: KafkaMessage,
        partition: int,
        offset: int,
        topic_enc: bytes,
        received_ms: int,
        now: float,
    ) -> list[tuple[RowBlock, bytes, int, int]] | None:
        """(block, row, batch index, produced ms) of every event, or None when any event is
        not simply routed (the reference path decides the message then)."""
        out = []
        try:
            for index, (cid, credential, event_uuid, name, ts, user, props, sent) in enumerate(
                events
            ):
                key = (cid, credential)
                block = blocks.get(key, _UNKNOWN)
                if block is _UNKNOWN:
                    block = blocks[key] = self._authenticate(cid, credential, lookup, now)
                if block is None:
                    return None
                if event_uuid is None:
                    derived = derive_event_id(Origin(self.topic, partition, offset), index)
                    event_uuid = uuid_of(derived)
                produced = msg.timestamp()[1] if sent is None else sent
                line = encode_row(
                    event_uuid,
                    memo_string(name),
                    ts,
                    user,
                    props,  # Raw: the producer's text, a bytes-like buffer
                    topic_enc,
                    partition,
                    offset,
                    index,
                    None,
                    1,
                    produced,
                    received_ms,
                )
                out.append((block, line, index, produced))
        except Exception:  # the reference path decides, and classifies the failure
            return None
        return out  # type: ignore[return-value]

    def _authenticate(
        self, client_id: str, credential: str, lookup: ClientLookup, now: float
    ) -> RowBlock | None:
        """The open block of an active client whose key matches; None for anything else."""
        found = lookup(client_id)
        if type(found) is not ClientFound:
            return None
        record = found.record
        if record.status is not ClientStatus.ACTIVE:
            return None
        if not hmac.compare_digest(credential, record.api_key_hash):
            return None
        return self.buffers.block(record.ch_database_name, client_id, now, record.ch_target)


_UNKNOWN = object()  # not authenticated yet in this poll
