"""Offset commits: what is durable is committed, with its accounting row first (I/O).

Invariants:
- a commit covers only offsets `OffsetTracker.committable()` returns: every event at or
  below them has a durable fate (at-least-once);
- the accounting rows of the committed ranges are written first, with a deduplication
  token: no accounting row, no commit, so the range stays open and is retried, and a range
  re-read after a crash replaces its row (the accounting is exact);
- each commit carries the crash-replay guard's high-water metadata for its partition
  (`router.replay_guard`), and the guard learns what Kafka recorded; before rows are
  inserted past what Kafka records, `record_high_water` commits it alone, at the
  unchanged offsets (no accounting row needed, so it costs one Kafka round trip);
- accounting rows go to the `default` target's ops database (reconciliation reads them
  there); while it is down, commit rounds back off (no round waits on it longer than
  `ACCOUNTING_TIMEOUT_S`) and offsets wait, while every target keeps being written;
- `committed` holds the last committed offset per partition: the consumer lag is counted
  from it (what a restart would read again).
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from analytics_core.ops_schema import ensure_ops_schema
from router.accounting import Accounting
from router.backoff import Backoff
from router.clickhouse_sink import ClickHouseSink, Inserted
from router.config import RouterSettings
from router.metrics import RouterMetrics
from router.offsets import OffsetTracker
from router.replay_guard import CrashReplayGuard

log = logging.getLogger("router")

# An accounting row is a few hundred bytes: a round that waits longer than this for one is
# an outage of `default`, and the consumer thread (which writes every target) moves on.
ACCOUNTING_TIMEOUT_S = 10


class OffsetCommitter:
    def __init__(
        self,
        rs: RouterSettings,
        consumer: Consumer,
        tracker: OffsetTracker,
        guard: CrashReplayGuard,
        metrics: RouterMetrics,
    ) -> None:
        self.rs = rs
        self.consumer = consumer
        self.tracker = tracker
        self.guard = guard
        self.metrics = metrics
        # Accounting rows are written on the consumer thread: a ClickHouse client of their own.
        self.accounting = (
            Accounting(rs.common.kafka.raw_topic, tracker) if rs.reconciliation else None
        )
        self._sink = (
            ClickHouseSink(rs.common.clickhouse, rs.instance_id, timeout_s=ACCOUNTING_TIMEOUT_S)
            if rs.reconciliation
            else None
        )
        self._accounting_backoff = Backoff(rs.retry_backoff_s, rs.retry_backoff_max_s)
        self._accounting_retry_at = 0.0  # monotonic: no accounting write before this
        self._ops_ready = False
        self.committed: dict[int, int] = {}  # partition -> last committed offset
        self.last_round = time.monotonic()

    def ensure_ops_schema(self) -> bool:
        if self.accounting is None or self._ops_ready:
            return True
        try:
            ensure_ops_schema(self.rs.common)
        except Exception as exc:
            log.warning("ops schema not ready; offsets wait for it", extra={"error": str(exc)})
            return False
        self._ops_ready = True
        return True

    def record_high_water(self, partitions: set[int]) -> bool:
        """Rows of `partitions` are about to be inserted: commit the crash-replay guard's
        high water for them at their unchanged offsets (the last committed one, else the
        first consumed), so no accounting row is due. False when Kafka did not take it."""
        topic = self.rs.common.kafka.raw_topic
        tps = []
        for p in sorted(partitions):
            offset = self.committed.get(p, self.tracker.first_offset((topic, p)))
            if offset is None:
                continue  # nothing consumed: no row of it to insert
            metadata = self.guard.commit_metadata(p, offset)
            if metadata is not None:  # else the offset is past every row attempted already
                tps.append(TopicPartition(topic, p, offset, metadata=metadata))
        if not tps:
            return True
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            log.warning("high-water commit failed; will retry", extra={"error": str(exc)})
            return False
        for done in tps:
            self.guard.committed(done.partition, done.offset, done.metadata)
        return True

    def commit(self) -> bool:
        """Commit what is durable. False when something to commit could not be (accounting
        row or Kafka): it is retried later."""
        self.last_round = time.monotonic()
        offsets = self.tracker.committable()
        if not offsets:
            return True
        by_partition = {p: o for (_t, p), o in offsets.items()}
        if self.accounting is not None and not self._write_accounting(by_partition):
            return False  # no accounting row, no commit: the range stays open, retried
        tps = []
        for (topic, p), offset in offsets.items():
            metadata = self.guard.commit_metadata(p, offset)
            if metadata is None:
                tps.append(TopicPartition(topic, p, offset))
            else:
                tps.append(TopicPartition(topic, p, offset, metadata=metadata))
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            log.warning("offset commit failed; will retry", extra={"error": str(exc)})
            return False
        self.tracker.mark_committed(offsets)
        if self.accounting is not None:
            self.accounting.committed(by_partition)
        self.metrics.last_commit_ts.set(time.time())
        for done in tps:
            self.guard.committed(done.partition, done.offset, done.metadata)
            self.committed[done.partition] = done.offset
        return True

    def _write_accounting(self, commits: dict[int, int]) -> bool:
        assert self.accounting is not None and self._sink is not None
        rows = self.accounting.rows_for(commits)
        if not rows:
            return True
        if time.monotonic() < self._accounting_retry_at:
            return False  # `default` failed lately: the offsets wait for its backoff
        if not self.ensure_ops_schema():
            self._accounting_failed()
            return False
        rs = self.rs
        outcome = self._sink.insert_accounting(
            rs.common.clickhouse.ops_database, rows, rs.instance_id, rs.group_id
        )
        if isinstance(outcome, Inserted):
            self._accounting_backoff.reset()
            return True
        delay = self._accounting_failed()
        log.warning(
            "accounting row not written; offsets not committed yet",
            extra={"detail": outcome.detail, "retry_in_s": delay},
        )
        return False

    def _accounting_failed(self) -> float:
        delay = self._accounting_backoff.next_delay()
        self._accounting_retry_at = time.monotonic() + delay
        return delay

    def assigned(self, partition: int, committed: int | None) -> None:
        if self.accounting is not None:
            self.accounting.assigned(partition, committed)
        if committed is not None:
            self.committed[partition] = committed

    def forget(self, partition: int) -> None:
        if self.accounting is not None:
            self.accounting.revoked(partition)
        self.committed.pop(partition, None)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
