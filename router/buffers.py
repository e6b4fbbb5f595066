"""Per-client row buffers and sealed batches (pure bookkeeping, no I/O).

A client database's rows are held in columns (`RowBlock`): the encoded rows, compressed,
and arrays of their partitions, offsets, batch indexes and produce times, so a buffered row
costs its compressed bytes plus `ROW_OVERHEAD_BYTES`, with no object per row.

Invariants:
- a batch, once sealed, never changes: a retry re-sends exactly the same rows
  with the same deduplication token, so an INSERT that succeeded but whose
  answer was lost is dropped by ClickHouse instead of duplicated;
- rows arriving while a client's batch is being retried go to a new batch;
- a block, and the batch sealed from it, is bound to one ClickHouse target (the client's
  when its first row came); rows of a client whose target changed (a move) start a new
  block, and the old one is sealed at once for its own target (router.service redirects a
  batch the old target refuses after the move's fence);
- a block knows each row's offset-tracker segment (router.offsets): an insert acknowledges
  exactly those rows, in their segments;
- `open_rows`/`open_bytes` are the sums over the open blocks (rows appended straight to a
  block are reported with `added`), and a batch keeps the bytes it was sealed with, so
  `total_bytes` bounds the memory the rows hold.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field

import lz4.block

from analytics_core.event_contract import Origin
from analytics_core.settings import DEFAULT_TARGET
from router.offsets import Segment
from router.rows import ROW_OVERHEAD_BYTES, PendingRow

CHUNK_BYTES = 64 * 1024  # rows are compressed this many (uncompressed) bytes at a time
NO_TARGETS: frozenset[str] = frozenset()


class RowBlock:
    """Rows of one client database, in columns (see the module doc).

    Rows are appended to `tail`; every `CHUNK_BYTES` the tail is compressed (LZ4) into
    `chunks`, so a buffered row costs about a fifth of its encoded size (a third for JSON
    that compresses poorly), which is what lets many clients wait for big INSERTs in a
    small memory budget. `ends[i]` is where row i ends in the uncompressed stream.
    `runs`/`run_counts` give each row's offset-tracker segment: consecutive rows of one
    poll's partition share one entry.
    """

    __slots__ = (
        "batch_indexes",
        "chunk_rows",
        "chunks",
        "client_id",
        "database",
        "ends",
        "nbytes",
        "offsets",
        "opened_at",
        "origins",
        "partitions",
        "produced_ms",
        "run_counts",
        "runs",
        "tail",
        "target",
    )

    def __init__(
        self,
        database: str,
        client_id: str,
        opened_at: float = 0.0,
        target: str = DEFAULT_TARGET,
    ) -> None:
        self.database = database
        self.client_id = client_id
        self.target = target  # the ClickHouse target its rows are written to
        self.opened_at = opened_at  # when its first row arrived
        self.chunks: list[bytes] = []  # compressed runs of whole rows
        self.chunk_rows = array("I")  # how many rows each chunk holds
        self.tail = bytearray()  # the rows after the last chunk
        self.ends = array("Q")
        self.partitions = array("I")
        self.offsets = array("q")
        self.batch_indexes = array("I")
        self.produced_ms = array("q")  # event sent_at, else Kafka timestamp: latency
        self.origins: dict[int, Origin] = {}  # row index -> first entry of a replayed row
        self.runs: list[Segment | None] = []
        self.run_counts = array("I")
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.ends)

    def add(
        self,
        line: bytes,
        partition: int,
        offset: int,
        batch_index: int,
        produced_ms: int,
        segment: Segment | None,
        origin: Origin | None = None,
    ) -> int:
        """Append one row; returns the memory it added (for the caller's totals)."""
        if origin is not None:
            self.origins[len(self.ends)] = origin
        tail = self.tail
        tail += line
        self.ends.append((self.ends[-1] if self.ends else 0) + len(line))
        self.partitions.append(partition)
        self.offsets.append(offset)
        self.batch_indexes.append(batch_index)
        self.produced_ms.append(produced_ms)
        runs = self.runs
        if runs and runs[-1] is segment:
            self.run_counts[-1] += 1
        else:
            runs.append(segment)
            self.run_counts.append(1)
        added = len(line) + ROW_OVERHEAD_BYTES
        if len(tail) >= CHUNK_BYTES:
            chunk = lz4.block.compress(bytes(tail))
            self.chunks.append(chunk)
            self.chunk_rows.append(len(self.ends) - sum(self.chunk_rows))
            added += len(chunk) - len(tail)
            self.tail = bytearray()
        self.nbytes += added
        return added

    def line_groups(self) -> Iterator[list[bytes]]:
        """Every row, encoded, in order: one list per chunk (decompressed one at a time),
        then the tail's."""
        ends = self.ends
        first = 0
        for chunk, count in zip(self.chunks, self.chunk_rows, strict=True):
            yield _split(lz4.block.decompress(chunk), ends, first, count)
            first += count
        yield _split(bytes(self.tail), ends, first, len(ends) - first)

    def lines(self) -> list[bytes]:
        return [line for group in self.line_groups() for line in group]

    def data(self) -> bytes:
        """Every row back to back (tests, rare paths)."""
        return b"".join(self.lines())

    def segments(self) -> dict[Segment, int]:
        """How many of its rows each offset-tracker segment has."""
        counts: dict[Segment, int] = {}
        for seg, n in zip(self.runs, self.run_counts, strict=True):
            if seg is not None:
                counts[seg] = counts.get(seg, 0) + n
        return counts

    def row(self, i: int, line: bytes | None = None) -> PendingRow:
        """Row `i` as a record (rare paths: dead letters, replay checks)."""
        if line is None:
            line = self.lines()[i]
        return PendingRow(
            self.partitions[i],
            self.offsets[i],
            self.batch_indexes[i],
            self.produced_ms[i],
            line,
            self.origins.get(i),
        )

    def rows(self) -> list[PendingRow]:
        return [self.row(i, line) for i, line in enumerate(self.lines())]

    def keeping(self, keep: Iterable[int]) -> RowBlock:
        """A block of the rows at `keep` (indexes in order), each in its segment still."""
        segment_of_row = [
            seg for seg, n in zip(self.runs, self.run_counts, strict=True) for _ in range(n)
        ]
        lines = self.lines()
        out = RowBlock(self.database, self.client_id, self.opened_at, self.target)
        for i in keep:
            out.add(
                lines[i],
                self.partitions[i],
                self.offsets[i],
                self.batch_indexes[i],
                self.produced_ms[i],
                segment_of_row[i],
                self.origins.get(i),
            )
        return out


def _split(data: bytes, ends: array[int], first: int, count: int) -> list[bytes]:
    """Rows first..first+count-1 out of their stretch of the stream, `data`."""
    base = ends[first - 1] if first else 0
    start = 0
    out = []
    for i in range(first, first + count):
        stop = ends[i] - base
        out.append(data[start:stop])
        start = stop
    return out


Spans = dict[int, tuple[int, int, int]]  # partition -> (lowest offset, highest, rows)


def offset_spans(partitions: Iterable[int], offsets: Iterable[int]) -> Spans:
    """Per partition, the lowest and highest offset of some rows, and how many rows."""
    ranges: dict[int, list[int]] = {}
    for p, o in zip(partitions, offsets, strict=True):
        lo_hi = ranges.get(p)
        if lo_hi is None:
            ranges[p] = [o, o, 1]
            continue
        if o < lo_hi[0]:
            lo_hi[0] = o
        elif o > lo_hi[1]:
            lo_hi[1] = o
        lo_hi[2] += 1
    return {p: (lo, hi, n) for p, (lo, hi, n) in ranges.items()}


def dedup_token(database: str, spans: Spans) -> str:
    """Deterministic for the same rows in any order: database + per-partition offset ranges
    and count."""
    spec = database + "|" + ",".join(f"{p}:{a}-{b}#{n}" for p, (a, b, n) in sorted(spans.items()))
    return hashlib.sha256(spec.encode()).hexdigest()


@dataclass(eq=False)
class Batch:
    """A sealed block on its way to ClickHouse (and back, while retried)."""

    database: str
    client_id: str
    rows: RowBlock
    spans: Spans  # of its rows: the token, and the high water before an insert
    token: str
    attempts: int = 0
    next_attempt_at: float = 0.0
    first_error: str | None = None
    first_failed_at: float | None = None
    target: str = DEFAULT_TARGET  # the ClickHouse target it is written to
    # Sent to the client's new target after the old one refused it (a move): before its next
    # attempt, rows whose event the new target holds already are dropped (router.writer).
    redirected: bool = False

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes

    @classmethod
    def from_rows(
        cls,
        database: str,
        client_id: str,
        rows: Iterable[PendingRow],
        target: str = DEFAULT_TARGET,
    ) -> Batch:
        """A batch of rows made elsewhere (the rare paths' records, tests)."""
        block = RowBlock(database, client_id, target=target)
        for r in rows:
            block.add(r.line, r.partition, r.offset, r.batch_index, r.produced_ms, None, r.origin)
        return cls.of(block)

    @classmethod
    def of(cls, block: RowBlock) -> Batch:
        spans = offset_spans(block.partitions, block.offsets)
        return cls(
            block.database,
            block.client_id,
            block,
            spans,
            dedup_token(block.database, spans),
            target=block.target,
        )

    def replace_rows(self, block: RowBlock) -> None:
        """Rows dropped before an attempt (revoked, or stored already): a new token."""
        self.rows = block
        self.spans = offset_spans(block.partitions, block.offsets)
        self.token = dedup_token(block.database, self.spans)


@dataclass
class ClientBuffers:
    open: dict[str, RowBlock] = field(default_factory=dict)  # database -> its open block
    retrying: list[Batch] = field(default_factory=list)
    open_rows: int = 0
    open_bytes: int = 0

    def block(
        self, database: str, client_id: str, now: float, target: str = DEFAULT_TARGET
    ) -> RowBlock:
        """The open block of `database` on `target` (created empty at `now`); rows appended
        to it are reported with `added`. An open block of `database` bound to another target
        (the client moved) is sealed for its own target and due at once."""
        block = self.open.get(database)
        if block is not None and block.target != target:
            self.retrying.append(self._seal_one(database))
            block = None
        if block is None:
            block = self.open[database] = RowBlock(database, client_id, now, target)
        return block

    def added(self, rows: int, nbytes: int) -> None:
        self.open_rows += rows
        self.open_bytes += nbytes

    def add(
        self,
        database: str,
        client_id: str,
        row: PendingRow,
        now: float = 0.0,
        nbytes: int | None = None,
        target: str = DEFAULT_TARGET,
    ) -> None:
        """One row (tests, rare paths; the hot path appends to `block` directly). `nbytes`:
        the memory to count for it instead of its real size (tests of the thresholds)."""
        block = self.block(database, client_id, now, target)
        real = block.add(
            row.line, row.partition, row.offset, row.batch_index, row.produced_ms, None, row.origin
        )
        if nbytes is not None:
            block.nbytes += nbytes - real
        self.added(1, real if nbytes is None else nbytes)

    def _seal_one(self, database: str) -> Batch:
        block = self.open.pop(database)
        self.open_rows -= len(block)
        self.open_bytes -= block.nbytes
        return Batch.of(block)

    def seal_ready(
        self,
        now: float,
        min_rows: int,
        max_wait_s: float,
        blocked: Container[str] = NO_TARGETS,
    ) -> list[Batch]:
        """Seal the buffers worth an INSERT now: at least `min_rows` rows, or a first row
        older than `max_wait_s`. Small clients wait (bounded), so many clients do not turn
        into many tiny INSERTs; the rest stay open. Buffers of `blocked` targets (busy or
        down) stay open too: they are written, bigger, when their target can take them."""
        ready = [
            db
            for db, block in self.open.items()
            if (len(block) >= min_rows or now - block.opened_at >= max_wait_s)
            and block.target not in blocked
        ]
        return [self._seal_one(db) for db in ready]

    def seal_largest(
        self, keep_rows: int, keep_bytes: int, blocked: Container[str] = NO_TARGETS
    ) -> list[Batch]:
        """Seal the biggest buffers until at most `keep_rows` rows and `keep_bytes` bytes
        stay open: under memory pressure the rows go out in the fewest, largest INSERTs.
        Buffers of `blocked` targets stay open (back-pressure bounds them)."""
        batches = []
        for db in sorted(self.open, key=lambda db: self.open[db].nbytes, reverse=True):
            if self.open_rows <= keep_rows and self.open_bytes <= keep_bytes:
                break
            if self.open[db].target not in blocked:
                batches.append(self._seal_one(db))
        return batches

    def total_rows(self) -> int:
        return self.open_rows + sum(len(b.rows) for b in self.retrying)

    def total_bytes(self) -> int:
        return self.open_bytes + sum(b.nbytes for b in self.retrying)

    def seal(self, blocked: Container[str] = NO_TARGETS) -> list[Batch]:
        """Turn every open buffer (but those of `blocked` targets) into a batch; those
        buffers start empty again."""
        return [self._seal_one(db) for db in list(self.open) if self.open[db].target not in blocked]

    def due_retries(self, now: float, blocked: Container[str] = NO_TARGETS) -> list[Batch]:
        """The parked batches due by `now`, but those of `blocked` targets."""
        due = [b for b in self.retrying if b.next_attempt_at <= now and b.target not in blocked]
        if due:
            taken = {id(b) for b in due}
            self.retrying = [b for b in self.retrying if id(b) not in taken]
        return due

    def park_for_retry(self, batch: Batch) -> None:
        self.retrying.append(batch)

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget rows of revoked partitions (their new owner re-reads them)."""
        dropped = 0

        def without(block: RowBlock) -> RowBlock | None:
            nonlocal dropped
            keep = [i for i, p in enumerate(block.partitions) if p not in partitions]
            if len(keep) == len(block):
                return None
            dropped += len(block) - len(keep)
            return block.keeping(keep)

        for db in list(self.open):
            kept = without(self.open[db])
            if kept is None:
                continue
            if len(kept):
                self.open[db] = kept
            else:
                del self.open[db]
        self.open_rows = sum(len(b) for b in self.open.values())
        self.open_bytes = sum(b.nbytes for b in self.open.values())
        for batch in self.retrying:
            kept = without(batch.rows)
            if kept is not None:
                batch.replace_rows(kept)
        self.retrying = [b for b in self.retrying if len(b.rows)]
        return dropped
