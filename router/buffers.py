"""Per-client row buffers and sealed batches (pure bookkeeping, no I/O).

Invariants:
- a batch, once sealed, never changes: a retry re-sends exactly the same rows
  with the same deduplication token, so an INSERT that succeeded but whose
  answer was lost is dropped by ClickHouse instead of duplicated;
- rows arriving while a client's batch is being retried go to a new batch;
- `open_rows`/`open_bytes` are the sums over the open buffers, and a batch keeps the
  bytes it was sealed with, so `total_bytes` bounds the memory the rows hold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from router.rows import PendingRow


@dataclass
class Batch:
    database: str
    client_id: str
    rows: list[PendingRow]
    token: str
    nbytes: int = 0
    attempts: int = 0
    next_attempt_at: float = 0.0
    first_error: str | None = None
    first_failed_at: float | None = None


def dedup_token(database: str, rows: list[PendingRow]) -> str:
    """Deterministic for the same rows: database + per-partition offset ranges and count."""
    ranges: dict[int, list[int]] = {}
    for r in rows:
        lo_hi = ranges.setdefault(r.partition, [r.offset, r.offset, 0])
        lo_hi[0] = min(lo_hi[0], r.offset)
        lo_hi[1] = max(lo_hi[1], r.offset)
        lo_hi[2] += 1
    spec = database + "|" + ",".join(f"{p}:{a}-{b}#{n}" for p, (a, b, n) in sorted(ranges.items()))
    return hashlib.sha256(spec.encode()).hexdigest()


@dataclass
class _Open:
    """One client database's open buffer."""

    client_id: str
    opened_at: float  # the first row's time
    rows: list[PendingRow] = field(default_factory=list)
    nbytes: int = 0


@dataclass
class ClientBuffers:
    open: dict[str, _Open] = field(default_factory=dict)  # database -> its open buffer
    retrying: list[Batch] = field(default_factory=list)
    open_rows: int = 0
    open_bytes: int = 0

    def add(
        self, database: str, client_id: str, row: PendingRow, now: float = 0.0, nbytes: int = 0
    ) -> None:
        buf = self.open.get(database)
        if buf is None:
            buf = self.open[database] = _Open(client_id, now)
        buf.rows.append(row)
        buf.nbytes += nbytes
        self.open_rows += 1
        self.open_bytes += nbytes

    def _seal_one(self, database: str) -> Batch:
        buf = self.open.pop(database)
        self.open_rows -= len(buf.rows)
        self.open_bytes -= buf.nbytes
        token = dedup_token(database, buf.rows)
        return Batch(database, buf.client_id, buf.rows, token, buf.nbytes)

    def seal_ready(self, now: float, min_rows: int, max_wait_s: float) -> list[Batch]:
        """Seal the buffers worth an INSERT now: at least `min_rows` rows, or a first row
        older than `max_wait_s`. Small clients wait (bounded), so many clients do not turn
        into many tiny INSERTs; the rest stay open."""
        ready = [
            db
            for db, buf in self.open.items()
            if len(buf.rows) >= min_rows or now - buf.opened_at >= max_wait_s
        ]
        return [self._seal_one(db) for db in ready]

    def seal_largest(self, keep_rows: int, keep_bytes: int) -> list[Batch]:
        """Seal the biggest buffers until at most `keep_rows` rows and `keep_bytes` bytes
        stay open: under memory pressure the rows go out in the fewest, largest INSERTs."""
        batches = []
        for db in sorted(self.open, key=lambda db: self.open[db].nbytes, reverse=True):
            if self.open_rows <= keep_rows and self.open_bytes <= keep_bytes:
                break
            batches.append(self._seal_one(db))
        return batches

    def total_rows(self) -> int:
        return self.open_rows + sum(len(b.rows) for b in self.retrying)

    def total_bytes(self) -> int:
        return self.open_bytes + sum(b.nbytes for b in self.retrying)

    def seal(self) -> list[Batch]:
        """Turn every open buffer into a batch; the buffers start empty again."""
        return [self._seal_one(db) for db in list(self.open)]

    def due_retries(self, now: float) -> list[Batch]:
        due = [b for b in self.retrying if b.next_attempt_at <= now]
        self.retrying = [b for b in self.retrying if b.next_attempt_at > now]
        return due

    def park_for_retry(self, batch: Batch) -> None:
        self.retrying.append(batch)

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget rows of revoked partitions (their new owner re-reads them)."""
        dropped = 0
        for db in list(self.open):
            buf = self.open[db]
            kept = [r for r in buf.rows if r.partition not in partitions]
            if len(kept) == len(buf.rows):
                continue
            dropped += len(buf.rows) - len(kept)
            if kept:
                buf.nbytes = buf.nbytes // len(buf.rows) * len(kept)  # a client's rows are alike
                buf.rows = kept
            else:
                del self.open[db]
        self.open_rows = sum(len(buf.rows) for buf in self.open.values())
        self.open_bytes = sum(buf.nbytes for buf in self.open.values())
        for b in self.retrying:
            kept = [r for r in b.rows if r.partition not in partitions]
            dropped += len(b.rows) - len(kept)
            if len(kept) != len(b.rows):
                b.nbytes = b.nbytes // len(b.rows) * len(kept)
                b.rows = kept
                b.token = dedup_token(b.database, kept)
        self.retrying = [b for b in self.retrying if b.rows]
        return dropped
