"""What the router consumed, per committed offset range, with every event's fate (pure).

Invariants:
- every consumed message of a partition lands in exactly one range; ranges of a
  partition are contiguous: [start, next) then [next, ...);
- a range is only emitted for offsets being committed, i.e. when every event in
  it has a durable fate, so counts never include an event that may still change
  (a routed event that ends as a `destination_error` dead letter is re-counted
  by `reclassify` before its offset can be committed);
- the range row is written before the offset commit, with a deduplication token;
  after a crash the replayed range starts at the same offset and replaces it;
- a message's fates are kept until its offset is committed: one shared key tuple
  for the usual one-event message, a list only for batches (memory per buffered
  row counts, see router.rows.ROW_OVERHEAD_BYTES).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROUTED = "routed"
DEAD_LETTERED = "dead_lettered"

# (client_id or "", outcome, reason or "", window_start_unix)
FateKey = tuple[str, str, str, int]

WINDOW_SECONDS = 3600


def window_of(received_ms: int) -> int:
    return received_ms // 1000 // WINDOW_SECONDS * WINDOW_SECONDS


def map_key(key: FateKey) -> str:
    client, outcome, reason, window = key
    return f"{client}|{outcome}|{reason}|{window}"


@dataclass
class RangeRow:
    topic: str
    partition: int
    first_offset: int
    next_offset: int
    messages: int
    events: int
    counts: dict[str, int]

    def token(self) -> str:
        return f"acct:{self.topic}:{self.partition}:{self.first_offset}:{self.next_offset}"


@dataclass
class _Partition:
    start: int | None = None
    pending: dict[int, FateKey | list[FateKey]] = field(default_factory=dict)


class Accounting:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._parts: dict[int, _Partition] = {}

    def assigned(self, partition: int, committed: int | None) -> None:
        """Start accounting a partition at its committed offset (None: first offset seen)."""
        self._parts[partition] = _Partition(start=committed)

    def revoked(self, partition: int) -> None:
        self._parts.pop(partition, None)

    def record(self, partition: int, offset: int, fates: list[FateKey]) -> None:
        state = self._parts.get(partition)
        if state is None:
            state = self._parts[partition] = _Partition()
        if state.start is None:
            state.start = offset
        state.pending[offset] = fates[0] if len(fates) == 1 else fates

    def reclassify(self, partition: int, offset: int, client_id: str, reason: str) -> None:
        """One routed event of this message became a dead letter (destination_error)."""
        state = self._parts.get(partition)
        fates = state.pending.get(offset) if state else None
        if not fates:
            return
        assert state is not None
        if type(fates) is tuple:
            client, outcome, _reason, window = fates
            if client == client_id and outcome == ROUTED:
                state.pending[offset] = (client, DEAD_LETTERED, reason, window)
            return
        assert isinstance(fates, list)
        for i, (client, outcome, _reason, window) in enumerate(fates):
            if client == client_id and outcome == ROUTED:
                fates[i] = (client, DEAD_LETTERED, reason, window)
                return

    def rows_for(self, commits: dict[int, int]) -> list[RangeRow]:
        """Range rows for partitions whose committed offset moves to `commits[p]`."""
        rows = []
        for partition, next_offset in commits.items():
            state = self._parts.get(partition)
            if state is None or state.start is None or next_offset <= state.start:
                continue
            tally: dict[FateKey, int] = {}
            messages = events = 0
            for offset, fates in state.pending.items():
                if offset >= next_offset:
                    continue
                messages += 1
                if type(fates) is tuple:
                    events += 1
                    tally[fates] = tally.get(fates, 0) + 1
                    continue
                assert isinstance(fates, list)
                events += len(fates)
                for k in fates:
                    tally[k] = tally.get(k, 0) + 1
            counts = {map_key(k): n for k, n in tally.items()}
            rows.append(
                RangeRow(self.topic, partition, state.start, next_offset, messages, events, counts)
            )
        return rows

    def committed(self, commits: dict[int, int]) -> None:
        """The rows were written and the offsets committed: start the next ranges."""
        for partition, next_offset in commits.items():
            state = self._parts.get(partition)
            if state is None:
                continue
            for offset in [o for o in state.pending if o < next_offset]:
                del state.pending[offset]
            state.start = next_offset
