"""The router loop: consume -> decide -> buffer per client -> INSERT / dead-letter -> commit.

This is the thin I/O shell around `router.decision.decide`. Invariants:
- offsets are committed only through `OffsetTracker`, i.e. never past an event
  whose row is not acknowledged by ClickHouse or whose dead letter is not
  acknowledged by the broker (at-least-once);
- before rows are inserted, the commit of their partition carries the highest
  offset that may reach ClickHouse (`hw=` commit metadata). After a crash the
  next owner reads it and skips rows of that range already in the table, so a
  re-read never leaves duplicates (effectively once);
- outages (ClickHouse unreachable, registry unavailable) never produce dead
  letters: the events wait, consumption pauses above `max_buffered_rows`;
- one client's broken database only delays that client's batch (retry with
  backoff, then `destination_error` dead letters); other clients keep flowing.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from analytics_core.client_cache import ClientDirectory
from analytics_core.clients import LookupResult
from analytics_core.dead_letter import DeadLetter
from analytics_core.event_contract import Origin
from analytics_core.ops_schema import ensure_ops_schema
from analytics_core.reasons import Reason
from analytics_core.trace.topic_scan import read_messages
from router import VERSION
from router.accounting import DEAD_LETTERED, ROUTED, Accounting, FateKey, window_of
from router.buffers import Batch, ClientBuffers
from router.clickhouse_sink import ClickHouseSink, Inserted, Outage, Rejected
from router.config import RouterSettings
from router.decision import RawMessage, Retry, Routed, decide
from router.flush_policy import FlushLimits, seal_due, under_pressure
from router.metrics import RouterMetrics
from router.offsets import OffsetTracker
from router.rows import PendingRow, pending_row

log = logging.getLogger("router")

CONSUME_BATCH = 2000
BEHIND_FOR_S = 2.0  # a full poll, or a write this long, means a backlog for this long
LATENCY_SAMPLE = 8
HW_PREFIX = "hw="


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_hw(metadata: str | None) -> int | None:
    if metadata and metadata.startswith(HW_PREFIX):
        try:
            return int(metadata[len(HW_PREFIX) :])
        except ValueError:
            return None
    return None


@dataclass
class _WriteResult:
    batch: Batch
    outcome: Inserted | Outage | Rejected
    dropped: list[PendingRow]  # rows found already stored (crash replay): ack without insert
    ingested_ms: int


@dataclass
class _InFlight:
    """The one write handed to the writer thread, and the rows it holds meanwhile."""

    future: Future[list[_WriteResult]]
    rows: int
    nbytes: int
    started: float


@dataclass
class _Backoff:
    base: float
    cap: float
    current: float = 0.0

    def next_delay(self) -> float:
        self.current = self.base if self.current == 0 else min(self.current * 2, self.cap)
        return self.current

    def reset(self) -> None:
        self.current = 0.0


class Router:
    def __init__(
        self,
        rs: RouterSettings,
        *,
        metrics: RouterMetrics | None = None,
        directory: ClientDirectory | None = None,
    ) -> None:
        self.rs = rs
        common = rs.common
        self.topic = common.kafka.raw_topic
        self.metrics = metrics or RouterMetrics()
        self.directory = directory or ClientDirectory(
            common.redis,
            common.postgres,
            local_ttl_s=rs.cache_local_ttl_s,
            redis_ttl_s=rs.cache_ttl_s,
            negative_ttl_s=rs.cache_negative_ttl_s,
        )
        self.consumer = Consumer(
            {
                "bootstrap.servers": common.kafka.bootstrap_servers,
                "group.id": rs.group_id,
                "client.id": rs.instance_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "roundrobin",
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                "max.poll.interval.ms": 300000,
                "fetch.min.bytes": 1,
                "queued.max.messages.kbytes": 65536,
            }
        )
        self.producer = Producer(
            {
                "bootstrap.servers": common.kafka.bootstrap_servers,
                "client.id": rs.instance_id + "-dl",
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 20,
                "message.timeout.ms": 300000,
            }
        )
        # One sink (HTTP connection) per concurrent INSERT; a sink serves one thread at a time.
        self._sinks: queue.SimpleQueue[ClickHouseSink] = queue.SimpleQueue()
        self._all_sinks = [
            ClickHouseSink(common.clickhouse, rs.instance_id) for _ in range(rs.insert_concurrency)
        ]
        for sink in self._all_sinks:
            self._sinks.put(sink)
        self._insert_pool = ThreadPoolExecutor(
            rs.insert_concurrency, thread_name_prefix="clickhouse-insert"
        )
        # Accounting rows are written on the consumer thread: a client of their own.
        self.accounting = Accounting(self.topic) if rs.reconciliation else None
        self.accounting_sink = (
            ClickHouseSink(common.clickhouse, rs.instance_id) if rs.reconciliation else None
        )
        self.ops_ready = False
        self.tracker = OffsetTracker()
        self.buffers = ClientBuffers()
        self.limits = FlushLimits.from_settings(rs)
        # Catching up: a backlog in Kafka (full polls) or paused by back-pressure.
        self.behind_until = 0.0
        self.last_cache_refresh = 0.0
        self.stop_event = threading.Event()
        self.assigned: set[int] = set()
        self.suspect: dict[int, tuple[int, int]] = {}  # partition -> offsets maybe in ClickHouse
        self.attempted_hw: dict[int, int] = {}
        self.committed_hw: dict[int, int] = {}
        self.retry_paused: dict[int, float] = {}  # partition -> resume at (registry outage)
        self.registry_backoff = _Backoff(rs.retry_backoff_s, rs.retry_backoff_max_s)
        self.outage_backoff = _Backoff(rs.retry_backoff_s, rs.retry_backoff_max_s)
        self.outage_until = 0.0
        self.paused_all = False
        self.last_flush_round = time.monotonic()
        self.failed_letters: list[
            tuple[bytes | None, bytes | None, list[tuple[str, bytes]], int, int]
        ] = []
        self.clickhouse_ok = True
        self.last_lag_check = 0.0
        self.on_flush: Callable[[], None] | None = None  # test hook: called after each flush
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="clickhouse-writer")
        self._inflight: _InFlight | None = None
        # Accounting keeps each buffered message's fate key: one shared tuple per key.
        self._fate_keys: dict[FateKey, FateKey] = {}

    # ------------------------------------------------------------------ lifecycle
    def ready(self) -> bool:
        return bool(self.assigned) and self.clickhouse_ok and not self.stop_event.is_set()

    def run(self) -> None:
        # Buffered rows are many small, acyclic, short-lived containers: the default GC
        # thresholds make full collections scan them over and over. Collect far less often
        # and keep start-up objects out of the scans.
        gc.collect()
        gc.freeze()
        gc.set_threshold(200_000, 50, 1000)
        self.directory.start_invalidation_listener()
        self._ensure_ops_schema()
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.metrics.up.set(1)
        log.info("router started", extra={"instance": self.rs.instance_id, "topic": self.topic})
        try:
            while not self.stop_event.is_set():
                self._step()
        finally:
            self._shutdown()

    def _ensure_ops_schema(self) -> bool:
        if self.accounting is None or self.ops_ready:
            return True
        try:
            ensure_ops_schema(self.rs.common)
        except Exception as exc:
            log.warning("ops schema not ready; offsets wait for it", extra={"error": str(exc)})
            return False
        self.ops_ready = True
        return True

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.rs.shutdown_timeout_s
        log.info("router stopping: flushing buffers and committing")
        self._flush(force=True)
        while self.buffers.total_rows() and time.monotonic() < deadline:
            self._flush(force=True)
            if self.buffers.total_rows():
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        self.producer.flush(max(0.0, deadline - time.monotonic()))
        self._commit()
        left = self.buffers.total_rows()
        if left:
            log.warning("exiting with unflushed rows; they will be re-read", extra={"rows": left})
        self.consumer.close()
        self._writer.shutdown(wait=True)
        self._insert_pool.shutdown(wait=True)
        for sink in self._all_sinks:
            sink.close()
        if self.accounting_sink is not None:
            self.accounting_sink.close()
        self.directory.close()
        self.metrics.up.set(0)
        log.info("router stopped")

    # ------------------------------------------------------------------ one iteration
    def _step(self) -> None:
        now = time.monotonic()
        self._resume_due(now)
        msgs = self.consumer.consume(num_messages=CONSUME_BATCH, timeout=0.1)
        if len(msgs) >= CONSUME_BATCH:
            self.behind_until = now + BEHIND_FOR_S
        if msgs:
            self._process(msgs)
        self.producer.poll(0)
        self._reproduce_failed_letters()
        if self._inflight is not None and self._inflight.future.done():
            self._finish_write()
        now = time.monotonic()
        if now - self.last_cache_refresh >= self.rs.cache_local_ttl_s / 4:
            self.last_cache_refresh = now
            self.directory.refresh_ahead()
        if self._flush_due(now):
            self._flush()
        self._apply_backpressure()
        if now - self.last_lag_check > 5.0:
            self.last_lag_check = now
            self._update_lag()

    def _process(self, msgs: list[Message]) -> None:
        # Hot path: names are bound to locals; one client lookup per client per poll
        # (the memo lives for one poll, ~0.1 s, well inside the cache TTLs).
        now_iso = _now_iso()
        received_ms = int(time.time() * 1000)
        skip: set[int] = set()
        m = self.metrics
        consumed_messages = consumed_events = 0
        accounting = self.accounting
        window = window_of(received_ms)
        directory_lookup = self.directory.lookup
        memo: dict[str, LookupResult] = {}
        fate_keys = self._fate_keys
        if len(fate_keys) > 100_000:  # keys of past windows / gone clients
            fate_keys.clear()

        def lookup(client_id: str) -> LookupResult:
            found = memo.get(client_id)
            if found is None:
                found = memo[client_id] = directory_lookup(client_id)
            return found

        seen = self.tracker.seen
        add_row = self.buffers.add
        now_mono = time.monotonic()
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
            topic: str = msg.topic()  # type: ignore[assignment]
            value = msg.value()
            raw = RawMessage(
                topic,
                partition,
                offset,
                value,
                msg.headers(),  # type: ignore[arg-type]  # list of (str, bytes | None)
                received_ms,
            )
            decision = decide(raw, lookup, now_iso=now_iso, router_version=VERSION)
            if type(decision) is Retry:
                self._retry_later(topic, partition, offset, decision.detail)
                memo.clear()
                skip.add(partition)
                continue
            assert type(decision) is list
            consumed_messages += 1
            consumed_events += len(decision)
            seen((topic, partition), offset, len(decision))
            keys: list[FateKey] = []
            for fate in decision:
                if type(fate) is Routed:
                    if accounting is not None:
                        key = (fate.client_id, ROUTED, "", window)
                        keys.append(fate_keys.setdefault(key, key))  # one tuple per client
                    sent = fate.event.sent_at_ms
                    row = pending_row(
                        fate,
                        topic,
                        partition,
                        offset,
                        sent if sent is not None else msg.timestamp()[1],
                        received_ms,
                    )
                    add_row(fate.database, fate.client_id, row, now_mono, row.memory())
                else:
                    dl = fate.letter  # type: ignore[union-attr]
                    if accounting is not None:
                        keys.append((dl.client_id or "", DEAD_LETTERED, dl.reason.value, window))
                    self._dead_letter(value, dl, partition, offset)
            if accounting is not None:
                accounting.record(partition, offset, keys)
        if consumed_messages:
            self.registry_backoff.reset()
        m.messages_consumed.inc(consumed_messages)
        m.events_consumed.inc(consumed_events)

    def _retry_later(self, topic: str, partition: int, offset: int, detail: str) -> None:
        """Registry outage: rewind the partition to this message and pause it with backoff."""
        delay = self.registry_backoff.next_delay()
        log.warning(
            "registry unavailable; pausing partition",
            extra={
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "retry_in_s": delay,
                "detail": detail,
            },
        )
        tp = TopicPartition(topic, partition, offset)
        self.consumer.pause([tp])
        try:
            self.consumer.seek(tp)
        except KafkaException as exc:
            log.warning("seek failed", extra={"error": str(exc)})
        self.retry_paused[partition] = time.monotonic() + delay
        self.metrics.retries.labels(kind="registry").inc()

    # ------------------------------------------------------------------ dead letters
    def _dead_letter(
        self, value: bytes | None, letter: DeadLetter, partition: int, offset: int
    ) -> None:
        headers = letter.headers()
        key = letter.client_id.encode() if letter.client_id else None
        self.metrics.events_dead_lettered.labels(reason=letter.reason.value).inc()
        log.info(
            "dead-lettered",
            extra={
                "reason": letter.reason.value,
                "client_id": letter.client_id,
                "topic": letter.source.topic,
                "partition": partition,
                "offset": offset,
                "detail": letter.detail[:200],
            },
        )
        self._produce_letter(value, key, headers, partition, offset)

    def _produce_letter(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int,
        offset: int,
    ) -> None:
        tpk = (self.topic, partition)

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                self.tracker.ack(tpk, offset)
            else:
                log.warning(
                    "dead letter not delivered; will re-send",
                    extra={"partition": partition, "offset": offset, "error": str(err)},
                )
                self.failed_letters.append((value, key, headers, partition, offset))

        while True:
            try:
                self.producer.produce(
                    self.rs.common.kafka.dead_letter_topic,
                    value=value,
                    key=key,
                    headers=headers,  # type: ignore[arg-type]
                    on_delivery=delivered,
                )
                return
            except BufferError:
                self.producer.poll(0.1)

    def _reproduce_failed_letters(self) -> None:
        if not self.failed_letters:
            return
        pending, self.failed_letters = self.failed_letters, []
        for value, key, headers, partition, offset in pending:
            self._produce_letter(value, key, headers, partition, offset)

    # ------------------------------------------------------------------ flushing
    def _catching_up(self, now: float) -> bool:
        behind = self.paused_all or now < self.behind_until
        self.metrics.catching_up.set(1 if behind else 0)
        return behind

    def _flush_due(self, now: float) -> bool:
        if under_pressure(self.buffers, self.limits, paused=self.paused_all):
            return True
        if self.buffers.open_rows and now - self.last_flush_round >= self.rs.flush_interval_s:
            return True
        return any(b.next_attempt_at <= now for b in self.buffers.retrying)

    def _flush(self, *, force: bool = False) -> None:
        """Seal the buffers and hand the batches to the writer thread.

        At most one write is in flight; its outcomes are applied on this (the consumer)
        thread by `_finish_write`, so the offset tracker is only touched here.
        `force` waits for the write to finish (shutdown, rebalance).
        """
        if self._inflight is not None:
            if not (force or self._inflight.future.done()):
                return
            self._finish_write()
        now = time.monotonic()
        if now < self.outage_until and not force:
            return
        self.last_flush_round = now
        if force:
            sealed = self.buffers.seal()
        else:
            sealed = seal_due(
                self.buffers,
                self.limits,
                now,
                catching_up=self._catching_up(now),
                paused=self.paused_all,
            )
        batches = sealed + self.buffers.due_retries(now if not force else float("inf"))
        if not batches:
            self._commit()
            return
        self._mark_high_water(batches)
        ingested_ms = int(time.time() * 1000)
        self._inflight = _InFlight(
            self._writer.submit(self._write, batches, ingested_ms),
            rows=sum(len(b.rows) for b in batches),
            nbytes=sum(b.nbytes for b in batches),
            started=time.monotonic(),
        )
        if force:
            self._finish_write()

    def _write(self, batches: list[Batch], ingested_ms: int) -> list[_WriteResult]:
        """Writer thread: INSERT the batches, `insert_concurrency` at a time.

        Touches only sinks (no shared bookkeeping); outcomes are applied by `_finish_write`.
        """

        def one(batch: Batch) -> _WriteResult:
            sink = self._sinks.get()
            try:
                dropped: list[PendingRow] = []
                outcome = self._insert(sink, batch, ingested_ms, dropped)
                return _WriteResult(batch, outcome, dropped, ingested_ms)
            finally:
                self._sinks.put(sink)

        return list(self._insert_pool.map(one, batches))

    def _finish_write(self) -> None:
        assert self._inflight is not None
        results = self._inflight.future.result()
        started = self._inflight.started
        self._inflight = None
        now = time.monotonic()
        if now - started >= BEHIND_FOR_S:
            # The writer, not Kafka, is behind (many clients, each INSERT a part): also
            # a backlog, worth fewer, bigger INSERTs.
            self.behind_until = now + BEHIND_FOR_S
        outage: list[Batch] = []
        last_outage: Outage | None = None
        for res in results:
            for r in res.dropped:
                self.tracker.ack((self.topic, r.partition), r.offset)
            if isinstance(res.outcome, Inserted):
                self._inserted(res.batch, res.outcome, res.ingested_ms)
            elif isinstance(res.outcome, Outage):
                outage.append(res.batch)
                last_outage = res.outcome
            else:
                self._rejected(res.batch, res.outcome)
        if last_outage is not None:
            self._outage(outage, last_outage)
        else:
            self.outage_backoff.reset()
            self.clickhouse_ok = True
        self.producer.poll(0)
        self._commit()
        if self.on_flush is not None:
            self.on_flush()

    def _insert(
        self, sink: ClickHouseSink, batch: Batch, ingested_ms: int, dropped: list[PendingRow]
    ) -> Inserted | Outage | Rejected:
        if self.suspect and batch.attempts == 0:
            outcome = self._drop_already_inserted(sink, batch, dropped)
            if outcome is not None:
                return outcome
            if not batch.rows:
                return Inserted(0, 0.0)
        return sink.insert(batch, ingested_ms)

    def _drop_already_inserted(
        self, sink: ClickHouseSink, batch: Batch, dropped: list[PendingRow]
    ) -> Outage | None:
        """Rows of a crash-replayed range that a previous owner already inserted are dropped."""
        suspect = dict(self.suspect)
        ranges: dict[int, tuple[int, int]] = {}
        for r in batch.rows:
            span = suspect.get(r.partition)
            if span is not None and span[0] <= r.offset <= span[1]:
                lo, hi = ranges.get(r.partition, (r.offset, r.offset))
                ranges[r.partition] = (min(lo, r.offset), max(hi, r.offset))
        if not ranges:
            return None
        present: set[tuple[int, int, int]] = set()
        for partition, (lo, hi) in ranges.items():
            found = sink.existing_rows(batch.database, self.topic, partition, lo, hi)
            if isinstance(found, Outage):
                return found
            present |= found
        if not present:
            return None
        kept: list[PendingRow] = []
        for r in batch.rows:
            key = (r.partition, r.offset, r.batch_index)
            (dropped if key in present else kept).append(r)
        log.info(
            "skipped rows already inserted before a restart",
            extra={"client_id": batch.client_id, "rows": len(dropped)},
        )
        batch.rows = kept
        return None

    def _inserted(self, batch: Batch, outcome: Inserted, ingested_ms: int) -> None:
        m = self.metrics
        m.batch_rows.observe(outcome.rows)
        m.insert_seconds.observe(outcome.seconds)
        m.events_routed.labels(client_id=batch.client_id).inc(outcome.rows)
        observe = m.e2e_latency.observe
        ack = self.tracker.ack
        topic = self.topic
        for i, r in enumerate(batch.rows):
            ack((topic, r.partition), r.offset)
            # Latency is sampled (1 row in LATENCY_SAMPLE): percentiles stay exact enough
            # and the hot path stays cheap.
            if i % LATENCY_SAMPLE == 0 and r.produced_ms > 0:
                observe(max(0.0, (ingested_ms - r.produced_ms) / 1000))
        if batch.attempts:
            log.info(
                "batch inserted after retry",
                extra={
                    "client_id": batch.client_id,
                    "rows": outcome.rows,
                    "attempts": batch.attempts + 1,
                },
            )

    def _outage(self, batches: list[Batch], outcome: Outage) -> None:
        delay = self.outage_backoff.next_delay()
        self.outage_until = time.monotonic() + delay
        self.clickhouse_ok = False
        self.metrics.insert_errors.labels(kind="outage").inc()
        self.metrics.retries.labels(kind="clickhouse_outage").inc()
        log.warning(
            "clickhouse unavailable; holding rows and retrying",
            extra={
                "retry_in_s": delay,
                "detail": outcome.detail,
                "rows": sum(len(b.rows) for b in batches),
            },
        )
        for b in batches:
            b.next_attempt_at = self.outage_until
            self.buffers.park_for_retry(b)

    def _rejected(self, batch: Batch, outcome: Rejected) -> None:
        batch.attempts += 1
        self.metrics.insert_errors.labels(kind="rejected").inc()
        if batch.first_error is None:
            batch.first_error = outcome.detail
            batch.first_failed_at = time.time()
        if batch.attempts < self.rs.destination_max_attempts:
            delay = min(
                self.rs.retry_backoff_s * 2 ** (batch.attempts - 1), self.rs.retry_backoff_max_s
            )
            batch.next_attempt_at = time.monotonic() + delay
            self.metrics.retries.labels(kind="rejected").inc()
            log.warning(
                "client database rejected rows; will retry",
                extra={
                    "client_id": batch.client_id,
                    "database": batch.database,
                    "attempt": batch.attempts,
                    "retry_in_s": delay,
                    "code": outcome.code,
                    "detail": outcome.detail,
                },
            )
            self.buffers.park_for_retry(batch)
            return
        originals = self._read_originals(batch)
        if originals is None:
            batch.next_attempt_at = time.monotonic() + self.rs.retry_backoff_max_s
            self.buffers.park_for_retry(batch)
            return
        log.error(
            "client database kept rejecting rows; dead-lettering them",
            extra={
                "client_id": batch.client_id,
                "database": batch.database,
                "rows": len(batch.rows),
                "detail": outcome.detail,
            },
        )
        now_iso = _now_iso()
        detail = f"database {batch.database}: {outcome.detail}"
        for r in batch.rows:
            if self.accounting is not None:
                self.accounting.reclassify(
                    r.partition, r.offset, batch.client_id, Reason.DESTINATION_ERROR.value
                )
            key = (r.partition, r.offset)
            if key in originals:
                value, why = originals[key], detail
            else:  # gone from Kafka (retention) before its dead letter: keep what we have
                value = r.line + b"]"
                why = f"{detail}; original message no longer in Kafka, value is the routed row"
            event_id, attempt = r.letter_fields()
            letter = DeadLetter(
                reason=Reason.DESTINATION_ERROR,
                detail=why,
                origin=r.source_origin(self.topic),
                source=Origin(self.topic, r.partition, r.offset),
                batch_index=r.batch_index,
                client_id=batch.client_id,
                event_id=event_id,
                first_failed_at=now_iso,
                attempt=attempt,
                router_version=VERSION,
            )
            self._dead_letter(value, letter, r.partition, r.offset)

    def _read_originals(self, batch: Batch) -> dict[tuple[int, int], bytes | None] | None:
        """The original messages of a batch's rows, read back from the (uncommitted) topic;
        None when Kafka can not be read now (the batch is retried later)."""
        wanted: dict[int, set[int]] = {}
        for r in batch.rows:
            wanted.setdefault(r.partition, set()).add(r.offset)
        try:
            return read_messages(self.rs.common.kafka, self.topic, wanted)
        except KafkaException as exc:
            log.warning(
                "could not read rejected rows' original messages back; will retry",
                extra={"client_id": batch.client_id, "error": str(exc)},
            )
            return None

    def _mark_high_water(self, batches: list[Batch]) -> None:
        """Commit, before inserting, the highest offset per partition that may reach ClickHouse."""
        for b in batches:
            for r in b.rows:
                if r.offset > self.attempted_hw.get(r.partition, -1):
                    self.attempted_hw[r.partition] = r.offset
        stale = {p for p, hw in self.attempted_hw.items() if self.committed_hw.get(p, -1) < hw}
        if stale:
            self._commit(include=stale)

    def _commit(self, *, include: set[int] | None = None) -> None:
        offsets = self.tracker.committable()
        if include:
            for tp, target in self.tracker.positions().items():
                if tp[1] in include and tp not in offsets:
                    offsets[tp] = target
        if not offsets:
            return
        by_partition = {p: o for (_t, p), o in offsets.items()}
        if self.accounting is not None and not self._write_accounting(by_partition):
            return  # no accounting row, no commit: the range stays open and is retried
        tps = []
        for (topic, partition), offset in offsets.items():
            hw = self.attempted_hw.get(partition)
            if hw is not None and hw >= offset:
                tps.append(TopicPartition(topic, partition, offset, metadata=f"{HW_PREFIX}{hw}"))
            else:
                tps.append(TopicPartition(topic, partition, offset))
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            log.warning("offset commit failed; will retry", extra={"error": str(exc)})
            return
        self.tracker.mark_committed(offsets)
        if self.accounting is not None:
            self.accounting.committed(by_partition)
        self.metrics.last_commit_ts.set(time.time())
        for done in tps:
            self.committed_hw[done.partition] = parse_hw(done.metadata) or -1
            span = self.suspect.get(done.partition)
            if span is not None and done.offset > span[1]:
                del self.suspect[done.partition]

    def _write_accounting(self, commits: dict[int, int]) -> bool:
        assert self.accounting is not None and self.accounting_sink is not None
        rows = self.accounting.rows_for(commits)
        if not rows:
            return True
        if not self._ensure_ops_schema():
            return False
        outcome = self.accounting_sink.insert_accounting(
            self.rs.common.clickhouse.ops_database, rows, self.rs.instance_id, self.rs.group_id
        )
        if isinstance(outcome, Inserted):
            return True
        log.warning(
            "accounting row not written; offsets not committed yet",
            extra={"detail": outcome.detail},
        )
        return False

    # ------------------------------------------------------------------ flow control
    def _apply_backpressure(self) -> None:
        # Every row the router holds counts: open buffers, the write in flight, retries.
        write = self._inflight
        total = self.buffers.total_rows() + (write.rows if write else 0)
        nbytes = self.buffers.total_bytes() + (write.nbytes if write else 0)
        self.metrics.buffered_rows.set(total)
        self.metrics.buffered_bytes.set(nbytes)
        rs = self.rs
        if not self.paused_all and (
            total >= rs.max_buffered_rows or nbytes >= rs.max_buffered_bytes
        ):
            self._set_paused(True)
            log.warning("buffer full; pausing consumption", extra={"rows": total, "bytes": nbytes})
        elif (
            self.paused_all
            and total < rs.max_buffered_rows // 2
            and nbytes < rs.max_buffered_bytes // 2
        ):
            self._set_paused(False)
            log.info("buffer drained; resuming consumption", extra={"rows": total, "bytes": nbytes})

    def _set_paused(self, paused: bool) -> None:
        tps = [TopicPartition(self.topic, p) for p in self.assigned]
        if tps:
            if paused:
                self.consumer.pause(tps)
            else:
                self.consumer.resume([tp for tp in tps if tp.partition not in self.retry_paused])
        self.paused_all = paused
        self.metrics.paused.set(1 if paused else 0)

    def _resume_due(self, now: float) -> None:
        due = [p for p, at in self.retry_paused.items() if at <= now]
        for p in due:
            del self.retry_paused[p]
            if not self.paused_all and p in self.assigned:
                self.consumer.resume([TopicPartition(self.topic, p)])

    def _update_lag(self) -> None:
        for p in list(self.assigned):
            tp = TopicPartition(self.topic, p)
            try:
                # cached: the high watermark from the last fetch response, no broker round-trip
                _lo, hi = self.consumer.get_watermark_offsets(tp, cached=True)
                pos = self.consumer.position([tp])[0].offset
            except KafkaException:
                continue
            if pos >= 0:
                self.metrics.consumer_lag.labels(partition=str(p)).set(max(0, hi - pos))

    # ------------------------------------------------------------------ rebalancing
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            log.warning("could not read committed offsets", extra={"error": str(exc)})
            committed = []
        for tp in committed:
            hw = parse_hw(tp.metadata)
            valid = tp.offset != OFFSET_INVALID and tp.offset >= 0
            if self.accounting is not None:
                self.accounting.assigned(tp.partition, tp.offset if valid else None)
            start = tp.offset if valid else 0
            if hw is not None and hw >= start:
                self.suspect[tp.partition] = (start, hw)
                self.attempted_hw[tp.partition] = hw
                log.info(
                    "partition resumes after an unclean stop; replayed rows are checked",
                    extra={"partition": tp.partition, "from": start, "to": hw},
                )
        self.assigned |= {tp.partition for tp in partitions}
        if self.paused_all and partitions:
            consumer.pause(partitions)
        log.info("partitions assigned", extra={"partitions": sorted(self.assigned)})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions}
        log.info("partitions revoked; flushing", extra={"partitions": sorted(revoked)})
        self._flush(force=True)
        self.producer.flush(10)
        self._commit()
        dropped = self.buffers.drop_partitions(revoked)
        if dropped:
            log.warning(
                "rows of revoked partitions left for the new owner", extra={"rows": dropped}
            )
        for p in revoked:
            self.tracker.forget((self.topic, p))
            if self.accounting is not None:
                self.accounting.revoked(p)
            self.suspect.pop(p, None)
            self.attempted_hw.pop(p, None)
            self.committed_hw.pop(p, None)
            self.retry_paused.pop(p, None)
        self.assigned -= revoked
