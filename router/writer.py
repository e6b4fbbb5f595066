"""The writer: INSERTs sealed batches on its own threads while the consumer keeps parsing.

Invariants:
- at most one write (a list of batches) is in flight; its outcomes are applied on the
  consumer thread (`Router._finish_write`), so offsets and buffers are only touched there;
- the writer touches only its sinks (one HTTP connection per concurrent INSERT) and the
  snapshot of the crash-replay guard it was handed: no shared bookkeeping;
- before a batch's first attempt, rows the table already holds are dropped and acked
  without an insert (router.replay_guard): crash replays by Kafka coordinates, dead-letter
  replays by event identity; and before the attempt of a batch redirected to its client's
  new target (a move fenced the old one), rows whose event that target holds already (a
  lost answer's INSERT on the old target, copied over by the move's delta) are dropped the
  same way, so a redirect never duplicates an event.

One Writer serves one ClickHouse target (router.lanes): a target that is down holds only
its own clients' batches.
"""

from __future__ import annotations

import logging
import queue
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from analytics_core.chunked import chunked
from analytics_core.events_table import EventKey
from analytics_core.settings import ClickHouseSettings
from router.buffers import Batch
from router.clickhouse_sink import ClickHouseSink, Inserted, Outage, Rejected
from router.replay_guard import (
    SuspectRange,
    drop_stored_replays,
    identity_of,
    replay_identities,
    suspect_spans,
)

log = logging.getLogger("router")

IDENTITY_CHUNK = 5000  # event identities looked up per query (the query text stays small)


@dataclass
class WriteResult:
    batch: Batch
    outcome: Inserted | Outage | Rejected
    ingested_ms: int  # when its INSERT started: the rows' ingested_at
    # (partition, offset) of rows found stored already: acked without an insert
    dropped: list[tuple[int, int]] = field(default_factory=list)
    visible_ms: int = 0  # when the INSERT was acknowledged: the rows became visible


@dataclass
class InFlightWrite:
    """The one write handed to the writer, and the rows it holds meanwhile."""

    future: Future[list[WriteResult]]
    rows: int
    nbytes: int
    started: float


class Writer:
    def __init__(
        self, settings: ClickHouseSettings, instance: str, topic: str, concurrency: int
    ) -> None:
        self.topic = topic
        self._sinks: queue.SimpleQueue[ClickHouseSink] = queue.SimpleQueue()
        self._all_sinks = [ClickHouseSink(settings, instance) for _ in range(concurrency)]
        for sink in self._all_sinks:
            self._sinks.put(sink)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="clickhouse-insert")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="clickhouse-writer")

    def submit(self, batches: list[Batch], suspect: dict[int, SuspectRange]) -> InFlightWrite:
        return InFlightWrite(
            self._writer.submit(self._write, batches, suspect),
            rows=sum(len(b.rows) for b in batches),
            nbytes=sum(b.nbytes for b in batches),
            started=time.monotonic(),
        )

    def _write(self, batches: list[Batch], suspect: dict[int, SuspectRange]) -> list[WriteResult]:
        def one(batch: Batch) -> WriteResult:
            sink = self._sinks.get()
            try:
                # ingested_at is when this batch's INSERT starts (a write of many batches
                # runs them a few at a time), so latency from it is honest.
                result = WriteResult(batch, Inserted(0, 0.0), int(time.time() * 1000))
                result.outcome = self._insert(sink, result, suspect)
                result.visible_ms = int(time.time() * 1000)
                return result
            finally:
                self._sinks.put(sink)

        return list(self._pool.map(one, batches))

    def _insert(
        self, sink: ClickHouseSink, result: WriteResult, suspect: dict[int, SuspectRange]
    ) -> Inserted | Outage | Rejected:
        batch = result.batch
        if batch.attempts == 0 or batch.redirected:
            outage = self._drop_stored(sink, result, suspect)
            if outage is not None:
                return outage
            if not len(batch.rows):
                return Inserted(0, 0.0)
        return sink.insert(batch, result.ingested_ms)

    def _drop_stored(
        self, sink: ClickHouseSink, result: WriteResult, suspect: dict[int, SuspectRange]
    ) -> Outage | None:
        batch = result.batch
        block = batch.rows
        if suspect:
            spans = suspect_spans(block.partitions, block.offsets, suspect)
            present: set[tuple[int, int, int]] = set()
            for partition, span in spans.items():
                found = sink.existing_rows(
                    batch.database, self.topic, partition, span.first, span.last
                )
                if isinstance(found, Outage):
                    return found
                present |= found
            if present:
                stored_rows = [
                    i
                    for i, row in enumerate(
                        zip(block.partitions, block.offsets, block.batch_indexes, strict=True)
                    )
                    if row in present
                ]
                self._drop(result, stored_rows)
                log.info(
                    "skipped rows already inserted before a restart",
                    extra={"client_id": batch.client_id, "rows": len(stored_rows)},
                )
        block = batch.rows
        if block.origins or batch.redirected:
            rows = block.rows()
            identities = (
                {i: identity_of(r) for i, r in enumerate(rows)}
                if batch.redirected
                else replay_identities(rows)
            )
            wanted = list(set(identities.values()))
            stored: set[EventKey] = set()
            for chunk in chunked(wanted, IDENTITY_CHUNK):
                found_now = sink.stored_identities(batch.database, set(chunk))
                if isinstance(found_now, Outage):
                    return found_now
                stored |= found_now
            _kept, dropped = drop_stored_replays(range(len(block)), identities, stored)
            if dropped:
                self._drop(result, dropped)
                log.info(
                    "skipped replayed events already stored",
                    extra={"client_id": batch.client_id, "rows": len(dropped)},
                )
        return None

    @staticmethod
    def _drop(result: WriteResult, indexes: list[int]) -> None:
        """Rows at `indexes` are stored already: out of the batch, acked by the consumer
        thread (which adjusts the batch's segment counts)."""
        block = result.batch.rows
        gone = set(indexes)
        result.dropped += [(block.partitions[i], block.offsets[i]) for i in indexes]
        result.batch.replace_rows(block.keeping(i for i in range(len(block)) if i not in gone))

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        for sink in self._all_sinks:
            sink.close()
