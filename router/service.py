"""The router loop: consume -> process -> buffer per client -> INSERT / dead-letter -> commit.

This is the thin I/O shell around pure steps: `router.processing` (the fates of one
message), `router.flush_policy` (when buffers become INSERTs), `router.backpressure`
(when consumption pauses), `router.rejection_policy` (a refused batch), and
`router.replay_guard` (rows stored already). Invariants:
- offsets are committed only through `OffsetTracker`, i.e. never past an event whose row
  is not acknowledged by ClickHouse or whose dead letter is not acknowledged by the broker
  (at-least-once); every consumed offset is committed within one flush interval of its
  fate becoming durable, dead-letter-only messages included;
- before rows are inserted, the commit of their partition carries the highest offset that
  may reach ClickHouse (`hw=` commit metadata). After a crash the next owner skips rows of
  that range already in the table, so a re-read never leaves duplicates (effectively once);
- outages (ClickHouse unreachable, registry unavailable) never produce dead letters: the
  events wait, consumption pauses when the rows held reach the memory budget; any other
  failure of one message dead-letters that message (`unprocessable`) and the loop goes on;
- one client's broken database only delays that client's batch (retry with backoff, then
  `destination_error` dead letters); other clients keep flowing;
- each client's rows are written to its ClickHouse target (its registry record, resolved
  per poll like its credential), through that target's lane (router.lanes): a target that
  is down delays only its own clients. Accounting rows go to `default` (reconciliation
  reads them there): while it is down, commits wait, every target keeps being written;
- a batch the client's old target refuses after a move fenced it (the table renamed, the
  database dropped) is sent to the client's current target, re-read from the registry,
  without counting as a failed attempt: never dead-lettered, never duplicated
  (router.writer drops what the new target holds already).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)

from analytics_core.client_cache import ClientDirectory
from analytics_core.clients import ClientFound, RegistryUnavailable
from analytics_core.dead_letter import DeadLetter
from analytics_core.kafka_reads import read_messages
from router import VERSION
from router.accounting import DEAD_LETTERED, ROUTED
from router.backoff import Backoff, PartitionBackoffs
from router.backpressure import Budget, Change, Held, pause_change
from router.buffers import Batch, ClientBuffers
from router.clickhouse_sink import Inserted, Outage, Rejected
from router.commits import OffsetCommitter
from router.config import RouterSettings
from router.dead_letter_producer import DeadLetterProducer
from router.decision import RawMessage
from router.failures import describe
from router.flush_policy import FlushLimits, seal_due, under_pressure
from router.kafka_consumer import consumer_config
from router.lanes import Lane, open_lanes
from router.metrics import RouterMetrics
from router.offsets import OffsetTracker
from router.poll import PollRouter
from router.rejection_policy import GiveUp, after_rejection, rejected_letters
from router.replay_guard import CrashReplayGuard

log = logging.getLogger("router")

CONSUME_BATCH = 2000
# A backlog: this many messages in Kafka past what the router consumed (at the rates of a
# steady load the lag stays around one poll, so these never flap into catch-up rules).
BACKLOG_LAG = 4 * CONSUME_BATCH
BEHIND_FOR_S = 2.0  # a backlog keeps the catch-up rules at least this long...
CAUGHT_UP_LAG = CONSUME_BATCH // 4  # ...but once the lag is this small it is drained
ROUNDS_PER_INTERVAL = 5  # buffers are checked for rows due this often per flush interval
LATENCY_SAMPLE = 8
LAG_EVERY_S = 5.0


def _unconfigured(target: str) -> str:
    return (
        f"the client is placed on ClickHouse target {target!r}, which this router does not "
        "configure (add it to CLICKHOUSE_TARGETS with its CLICKHOUSE_<NAME>_* settings)"
    )


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


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
            redis_timeout_s=rs.redis_timeout_s,
            breaker_failures=rs.breaker_failures,
            breaker_retry_s=rs.breaker_retry_s,
        )
        self.consumer = Consumer(consumer_config(rs))
        self.tracker = OffsetTracker()
        self.letters = DeadLetterProducer(
            common.kafka, rs.instance_id + "-dl", self._letter_delivered, self.metrics
        )
        self.lanes: dict[str, Lane] = open_lanes(
            common.clickhouse_targets(),
            rs.instance_id,
            self.topic,
            rs.insert_concurrency,
            rs.retry_backoff_s,
            rs.retry_backoff_max_s,
        )
        self.guard = CrashReplayGuard()
        self.committer = OffsetCommitter(rs, self.consumer, self.tracker, self.guard, self.metrics)
        self.accounting = self.committer.accounting
        self.buffers = ClientBuffers()
        # Buffers are checked for rows due every `seal_every_s`; offsets are committed every
        # flush interval (each commit writes an accounting row and waits for Kafka).
        self.seal_every_s = rs.flush_interval_s / ROUNDS_PER_INTERVAL
        self.limits = FlushLimits.from_settings(rs, self.seal_every_s)
        self.budget = Budget(rs.max_buffered_rows, rs.max_buffered_bytes)
        # Catching up: a backlog in Kafka (full polls, or a lag of a poll) or paused by
        # back-pressure. When the lag of a backlog is gone, the next flush round writes every
        # open buffer (`backlog_drained`, router.flush_policy).
        self.behind_until = 0.0
        self.in_backlog = False
        self.backlog_drained = False
        self.consumed_to: dict[int, int] = {}  # partition -> next offset to process
        self.last_cache_refresh = 0.0
        for name in self.lanes:
            self.metrics.target_up.labels(target=name).set(1)
        self.stop_event = threading.Event()
        self.assigned: set[int] = set()
        self.retry_paused: dict[int, float] = {}  # partition -> resume at (registry outage)
        # Per partition: one stuck on an uncached client backs off (and logs) on its own,
        # while the others flow (a shared backoff was reset by their progress every poll).
        self.registry_backoffs = PartitionBackoffs(rs.retry_backoff_s, rs.retry_backoff_max_s)
        self.kafka_backoff = Backoff(rs.retry_backoff_s, rs.retry_backoff_max_s)
        self.paused_all = False
        self.last_flush_round = time.monotonic()
        self.last_lag_check = 0.0
        self.on_flush: Callable[[], None] | None = None  # test hook: called after each flush
        self.poll_router = PollRouter(
            self.topic,
            self.buffers,
            self.tracker,
            self.directory.lookup,
            common.replay.keys(),
            VERSION,
            fresh=self.directory.fresh,
            lookup_many=self.directory.lookup_many,
        )

    # ------------------------------------------------------------------ lifecycle
    @property
    def clickhouse_ok(self) -> bool:
        """Every target took its last write."""
        return all(lane.ok for lane in self.lanes.values())

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
        self.committer.ensure_ops_schema()
        self.consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.metrics.up.set(1)
        log.info("router started", extra={"instance": self.rs.instance_id, "topic": self.topic})
        try:
            while not self.stop_event.is_set():
                self._step()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.rs.shutdown_timeout_s
        log.info("router stopping: flushing buffers and committing")
        self._flush(force=True)
        while self.buffers.total_rows() and time.monotonic() < deadline:
            self._flush(force=True)
            if self.buffers.total_rows():
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        self.letters.flush(max(0.0, deadline - time.monotonic()))
        self.committer.commit()
        left = self.buffers.total_rows()
        if left:
            log.warning("exiting with unflushed rows; they will be re-read", extra={"rows": left})
        self.consumer.close()
        for lane in self.lanes.values():
            lane.writer.close()
        self.committer.close()
        self.directory.close()
        self.metrics.up.set(0)
        log.info("router stopped")

    # ------------------------------------------------------------------ one iteration
    def _step(self) -> None:
        now = time.monotonic()
        self._resume_due(now)
        msgs = self.consumer.consume(num_messages=CONSUME_BATCH, timeout=0.1)
        if msgs:
            self._process(msgs)
        else:
            self._skip_past_markers()
        self._note_backlog(now)
        self.letters.poll(0)
        self.letters.resend_undelivered()
        for lane in self.lanes.values():
            if lane.done():
                self._finish_write(lane)
        now = time.monotonic()
        if now - self.last_cache_refresh >= self.rs.cache_local_ttl_s / 4:
            self.last_cache_refresh = now
            self.directory.refresh_ahead()
        if self._flush_due(now):
            self._flush()
        if now - self.committer.last_round >= self.rs.flush_interval_s:
            # What became durable since the last round: rows inserted, letters delivered.
            self.committer.commit()
        self._apply_backpressure()
        if now - self.last_lag_check > LAG_EVERY_S:
            self.last_lag_check = now
            self._update_lag()

    def _process(self, msgs: list[Message]) -> None:
        result = self.poll_router.route(
            msgs,  # type: ignore[arg-type]  # confluent_kafka.Message is a KafkaMessage
            int(time.time() * 1000),
            _now_iso(),
            time.monotonic(),
        )
        self.consumed_to.update(result.positions)
        for rewind in result.rewinds:
            self._retry_later(self.topic, rewind.partition, rewind.offset, rewind.detail)
        self.registry_backoffs.progressed(result.positions, (r.partition for r in result.rewinds))
        for raw, exc in result.unprocessable:
            self._unprocessable(raw, exc)
        send_letter = self.letters.send
        for item in result.letters:
            send_letter(item.value, item.letter, item.partition, item.offset)
        self.metrics.messages_consumed.inc(result.messages)
        self.metrics.events_consumed.inc(result.events)

    def _skip_past_markers(self) -> None:
        """Idle: move each partition's offsets up to the consumer's position. A transaction's
        commit or abort marker takes an offset but is never handed to the router, so without
        this the committed offset would stay one short of the log end (lag 1, and the stalled
        commits alert) until the next message. Not for a partition waiting to re-read a
        message (registry outage): its position may be past messages not routed yet."""
        tps = [TopicPartition(self.topic, p) for p in self.assigned if p not in self.retry_paused]
        if not tps:
            return
        try:
            positions = self.consumer.position(tps)
        except KafkaException:
            return
        for tp in positions:
            p, offset = tp.partition, tp.offset
            if offset < 0 or offset <= self.consumed_to.get(p, -1):
                continue
            committed = self.committer.committed.get(p)
            if p not in self.consumed_to and (committed is None or offset <= committed):
                continue
            if self.tracker.skip_to((self.topic, p), offset):
                self.consumed_to[p] = offset

    def _unprocessable(self, raw: RawMessage, exc: BaseException) -> None:
        self.metrics.unprocessable.labels(error=type(exc).__name__).inc()
        log.error(
            "message could not be processed; dead-lettered as unprocessable",
            exc_info=exc,
            extra={
                "topic": raw.topic,
                "partition": raw.partition,
                "offset": raw.offset,
                "error": describe(exc),
            },
        )

    def _retry_later(self, topic: str, partition: int, offset: int, detail: str) -> None:
        """Outage: rewind the partition to this message and pause it with backoff."""
        delay = self.registry_backoffs.next_delay(partition)
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

    def _letter_delivered(self, partition: int, offset: int, letter: DeadLetter) -> None:
        self.tracker.ack(
            (self.topic, partition),
            offset,
            letter.client_id or "",
            DEAD_LETTERED,
            letter.reason.value,
        )

    # ------------------------------------------------------------------ flushing
    def _note_backlog(self, now: float) -> None:
        """A lag of `BACKLOG_LAG` is a backlog (catch-up rules for at least
        `BEHIND_FOR_S`); a lag under `CAUGHT_UP_LAG` after one means it is drained."""
        lag = self._kafka_lag()
        if lag >= BACKLOG_LAG:
            self.behind_until = now + BEHIND_FOR_S
            self.in_backlog = True
        elif self.in_backlog and lag < CAUGHT_UP_LAG:
            self.in_backlog = False
            self.backlog_drained = True
        self._catching_up(now)

    def _kafka_lag(self) -> int:
        """Messages in Kafka past what this router consumed (high watermarks as of the last
        fetch: no broker round trip)."""
        lag = 0
        for p in self.assigned:
            consumed = self.consumed_to.get(p, self.committer.committed.get(p))
            if consumed is None:
                continue
            try:
                hi = self.consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), cached=True
                )[1]
            except KafkaException:
                continue
            lag += max(0, hi - consumed)
        return lag

    def _catching_up(self, now: float) -> bool:
        behind = self.paused_all or now < self.behind_until
        self.metrics.catching_up.set(1 if behind else 0)
        return behind

    def _flush_due(self, now: float) -> bool:
        if self.backlog_drained or under_pressure(
            self.buffers, self.limits, paused=self.paused_all
        ):
            return True
        if self.buffers.open_rows and now - self.last_flush_round >= self.seal_every_s:
            return True
        return any(b.next_attempt_at <= now for b in self.buffers.retrying)

    def _flush(self, *, force: bool = False) -> None:
        """Seal the buffers and hand the batches to their targets' lanes.

        Each lane has at most one write in flight; its outcomes are applied on this (the
        consumer) thread by `_finish_write`, so the offset tracker is only touched here.
        Buffers of a target whose lane is busy or backing off an outage stay open (or
        parked) for it; the other lanes are written. `force` waits for every write to
        finish and ignores outage backoffs (shutdown, rebalance).
        """
        for lane in self.lanes.values():
            if lane.inflight is not None and (force or lane.done()):
                self._finish_write(lane)
        now = time.monotonic()
        blocked = frozenset(
            name
            for name, lane in self.lanes.items()
            if lane.inflight is not None or (not force and now < lane.outage_until)
        )
        if len(blocked) == len(self.lanes):
            return
        self.last_flush_round = now
        if force:
            sealed = self.buffers.seal(blocked)
        else:
            sealed = seal_due(
                self.buffers,
                self.limits,
                now,
                catching_up=self._catching_up(now),
                paused=self.paused_all,
                caught_up=self.backlog_drained,
                blocked=blocked,
            )
            self.backlog_drained = False
        batches = sealed + self.buffers.due_retries(now if not force else float("inf"), blocked)
        unplaced = [b for b in batches if b.target not in self.lanes]
        if unplaced:
            batches = [b for b in batches if b.target in self.lanes]
            for b in unplaced:  # the client may have moved to a configured target since
                self._rejected(b, Rejected(None, _unconfigured(b.target)))
        if not batches:
            return
        highest: dict[int, int] = {}
        for b in batches:
            for partition, (_lo, hi, _n) in b.spans.items():
                if hi > highest.get(partition, -1):
                    highest[partition] = hi
        stale = self.guard.high_water_to_commit(highest)
        if stale and not self.committer.record_high_water(stale):
            # Kafka did not record how far rows may reach ClickHouse: inserting now could
            # leave rows a new owner would not know to skip. The rows wait (an outage).
            self._hold(batches, "the high-water offset commit failed")
            return
        self.kafka_backoff.reset()
        suspect = self.guard.snapshot()
        by_target: dict[str, list[Batch]] = {}
        for b in batches:
            by_target.setdefault(b.target, []).append(b)
        for target, group in by_target.items():
            lane = self.lanes[target]
            lane.inflight = lane.writer.submit(group, suspect)
        if force:
            for target in by_target:
                self._finish_write(self.lanes[target])

    def _finish_write(self, lane: Lane) -> None:
        """Apply a lane's write outcomes; its offsets are committed by the next commit round."""
        assert lane.inflight is not None
        results = lane.inflight.future.result()
        lane.inflight = None
        outage: list[Batch] = []
        last_outage: Outage | None = None
        for res in results:
            if res.dropped:
                self._stored_already(res.batch, res.dropped)
            if isinstance(res.outcome, Inserted):
                self._inserted(res.batch, res.outcome, res.visible_ms)
            elif isinstance(res.outcome, Outage):
                outage.append(res.batch)
                last_outage = res.outcome
            else:
                self._rejected(res.batch, res.outcome)
        if last_outage is not None:
            self._outage(lane, outage, last_outage)
        else:
            if not lane.ok:
                log.info("clickhouse reachable again", extra={"target": lane.target})
            lane.backoff.reset()
            lane.ok = True
            self.metrics.target_up.labels(target=lane.target).set(1)
        self.letters.poll(0)
        if self.on_flush is not None:
            self.on_flush()

    def _hold(self, batches: list[Batch], why: str) -> None:
        delay = self.kafka_backoff.next_delay()
        until = time.monotonic() + delay
        for lane in self.lanes.values():
            lane.outage_until = max(lane.outage_until, until)
        self.metrics.retries.labels(kind="kafka_commit").inc()
        log.warning(
            "kafka unavailable; holding rows until their offsets can be recorded",
            extra={"retry_in_s": delay, "detail": why, "rows": sum(len(b.rows) for b in batches)},
        )
        for b in batches:
            b.next_attempt_at = until
            self.buffers.park_for_retry(b)

    def _stored_already(self, batch: Batch, dropped: list[tuple[int, int]]) -> None:
        """Rows the writer found stored (a crash or dead-letter replay, out of the batch
        now): their fate is durable, routed."""
        for partition, offset in dropped:
            self.tracker.ack((self.topic, partition), offset, batch.client_id, ROUTED)

    def _inserted(self, batch: Batch, outcome: Inserted, visible_ms: int) -> None:
        m = self.metrics
        m.batch_rows.observe(outcome.rows)
        m.insert_seconds.observe(outcome.seconds)
        m.events_routed.labels(client_id=batch.client_id).inc(outcome.rows)
        client_id = batch.client_id
        for seg, n in batch.rows.segments().items():
            seg.done(n, client_id, ROUTED)
        # Latency is sampled (1 row in LATENCY_SAMPLE): percentiles stay exact enough and
        # the loop stays cheap. Visible = the INSERT acknowledged.
        observe = m.e2e_latency.observe
        for produced in batch.rows.produced_ms[::LATENCY_SAMPLE]:
            if produced > 0:
                observe(max(0.0, (visible_ms - produced) / 1000))
        if batch.attempts:
            log.info(
                "batch inserted after retry",
                extra={
                    "client_id": batch.client_id,
                    "rows": outcome.rows,
                    "attempts": batch.attempts + 1,
                },
            )

    def _outage(self, lane: Lane, batches: list[Batch], outcome: Outage) -> None:
        """The lane's target is unreachable: its batches wait with backoff, other lanes go on."""
        delay = lane.backoff.next_delay()
        lane.outage_until = time.monotonic() + delay
        lane.ok = False
        self.metrics.target_up.labels(target=lane.target).set(0)
        self.metrics.insert_errors.labels(kind="outage").inc()
        self.metrics.retries.labels(kind="clickhouse_outage").inc()
        log.warning(
            "clickhouse unavailable; holding rows and retrying",
            extra={
                "target": lane.target,
                "retry_in_s": delay,
                "detail": outcome.detail,
                "rows": sum(len(b.rows) for b in batches),
            },
        )
        for b in batches:
            b.next_attempt_at = lane.outage_until
            self.buffers.park_for_retry(b)

    def _follow_move(self, batch: Batch) -> bool:
        """After a refused INSERT: True when the batch was parked again, without counting an
        attempt, because its client is now on another target (a move: the batch goes there)
        or the registry can not tell now (it is retried later)."""
        self.directory.forget(batch.client_id)  # the move invalidated Redis: read it again
        found = self.directory.lookup(batch.client_id)
        if isinstance(found, RegistryUnavailable):
            batch.next_attempt_at = time.monotonic() + self.rs.retry_backoff_max_s
            self.buffers.park_for_retry(batch)
            self.metrics.retries.labels(kind="registry").inc()
            return True
        if type(found) is not ClientFound:
            return False
        record = found.record
        if record.ch_target == batch.target or record.ch_database_name != batch.database:
            return False
        log.info(
            "client moved; its batch goes to its current target",
            extra={
                "client_id": batch.client_id,
                "from": batch.target,
                "to": record.ch_target,
                "rows": len(batch.rows),
            },
        )
        batch.target = record.ch_target
        batch.redirected = True
        batch.next_attempt_at = 0.0
        self.buffers.park_for_retry(batch)
        self.metrics.retries.labels(kind="moved").inc()
        return True

    def _rejected(self, batch: Batch, outcome: Rejected) -> None:
        if self._follow_move(batch):
            return
        batch.attempts += 1
        self.metrics.insert_errors.labels(kind="rejected").inc()
        if batch.first_error is None:
            batch.first_error = outcome.detail
            batch.first_failed_at = time.time()
        rs = self.rs
        verdict = after_rejection(
            batch.attempts, rs.destination_max_attempts, rs.retry_backoff_s, rs.retry_backoff_max_s
        )
        if not isinstance(verdict, GiveUp):
            batch.next_attempt_at = time.monotonic() + verdict.delay_s
            self.metrics.retries.labels(kind="rejected").inc()
            log.warning(
                "client database rejected rows; will retry",
                extra={
                    "client_id": batch.client_id,
                    "database": batch.database,
                    "attempt": batch.attempts,
                    "retry_in_s": verdict.delay_s,
                    "code": outcome.code,
                    "detail": outcome.detail,
                },
            )
            self.buffers.park_for_retry(batch)
            return
        originals = self._read_originals(batch)
        if originals is None:
            batch.next_attempt_at = time.monotonic() + rs.retry_backoff_max_s
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
        letters = rejected_letters(
            batch,
            originals,
            topic=self.topic,
            detail=f"database {batch.database}: {outcome.detail}",
            now_iso=_now_iso(),
            router_version=VERSION,
        )
        for item in letters:  # each acknowledges its row's part when delivered
            self.letters.send(item.value, item.letter, item.partition, item.offset)

    def _read_originals(self, batch: Batch) -> dict[tuple[int, int], bytes | None] | None:
        """The original messages of a batch's rows, read back from the (uncommitted) topic;
        None when Kafka can not be read now (the batch is retried later)."""
        wanted: dict[int, set[int]] = {}
        for partition, offset in zip(batch.rows.partitions, batch.rows.offsets, strict=True):
            wanted.setdefault(partition, set()).add(offset)
        try:
            return read_messages(self.rs.common.kafka, self.topic, wanted)
        except KafkaException as exc:
            log.warning(
                "could not read rejected rows' original messages back; will retry",
                extra={"client_id": batch.client_id, "error": str(exc)},
            )
            return None

    # ------------------------------------------------------------------ flow control
    def _apply_backpressure(self) -> None:
        writes = [lane.inflight for lane in self.lanes.values() if lane.inflight is not None]
        held = Held(
            self.buffers.total_rows() + sum(w.rows for w in writes),
            self.buffers.total_bytes() + sum(w.nbytes for w in writes),
        )
        self.metrics.buffered_rows.set(held.rows)
        self.metrics.buffered_bytes.set(held.nbytes)
        change = pause_change(self.paused_all, held, self.budget)
        if change is Change.PAUSE:
            self._set_paused(True)
            log.warning(
                "buffer full; pausing consumption", extra={"rows": held.rows, "bytes": held.nbytes}
            )
        elif change is Change.RESUME:
            self._set_paused(False)
            log.info(
                "buffer drained; resuming consumption",
                extra={"rows": held.rows, "bytes": held.nbytes},
            )

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
        """Lag from the COMMITTED offset: what a restart would read again."""
        for p in list(self.assigned):
            tp = TopicPartition(self.topic, p)
            try:
                # cached: the high watermark from the last fetch response, no broker round-trip
                lo, hi = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if hi < 0:
                continue
            committed = self.committer.committed.get(p, lo)
            self.metrics.consumer_lag.labels(partition=str(p)).set(max(0, hi - max(committed, lo)))

    # ------------------------------------------------------------------ rebalancing
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            log.warning("could not read committed offsets", extra={"error": str(exc)})
            committed = []
        for tp in committed:
            valid = tp.offset != OFFSET_INVALID and tp.offset >= 0
            self.committer.assigned(tp.partition, tp.offset if valid else None)
            if self.guard.assigned(tp.partition, tp.offset if valid else None, tp.metadata):
                span = self.guard.suspect[tp.partition]
                log.info(
                    "partition resumes after an unclean stop; replayed rows are checked",
                    extra={"partition": tp.partition, "from": span.first, "to": span.last},
                )
        self.assigned |= {tp.partition for tp in partitions}
        consumer.incremental_assign(partitions)
        if self.paused_all and partitions:
            consumer.pause(partitions)
        log.info("partitions assigned", extra={"partitions": sorted(self.assigned)})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions}
        log.info("partitions revoked; flushing", extra={"partitions": sorted(revoked)})
        self._flush(force=True)
        self.letters.flush(10)
        self.committer.commit()
        self._forget(revoked)
        consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group moved on without us (session timeout): the partitions may already be
        someone else's, so nothing is committed; their rows are the new owner's to re-read."""
        lost = {tp.partition for tp in partitions}
        log.warning(
            "partitions lost; leaving them to the new owner", extra={"partitions": sorted(lost)}
        )
        for lane in self.lanes.values():
            if lane.inflight is not None:
                # Its rows must not reach ClickHouse after the new owner looked for them: let
                # the write finish now (nothing is committed); a failed batch is forgotten too.
                self._finish_write(lane)
        self._forget(lost)
        consumer.incremental_unassign(partitions)

    def _forget(self, partitions: set[int]) -> None:
        dropped = self.buffers.drop_partitions(partitions)
        if dropped:
            log.warning(
                "rows of revoked partitions left for the new owner", extra={"rows": dropped}
            )
        for p in partitions:
            self.consumed_to.pop(p, None)
            self.tracker.forget((self.topic, p))
            self.committer.forget(p)
            self.guard.revoked(p)
            self.retry_paused.pop(p, None)
            self.registry_backoffs.forget(p)
        self.assigned -= partitions
