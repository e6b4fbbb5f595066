"""The reprocessing run: deferred records first, then the dead-letter topic (thin I/O loop).

Per chunk: select -> skip already handled -> look up clients -> classify -> produce replays
and flush -> record fates in PostgreSQL (one transaction) -> commit offsets (unfiltered
runs only). See the package docstring for why this order makes every step repeatable.

`python -m analytics_core.dlq.reprocess [--client-id ID] [--reason R] [--max-attempts N]`
runs it without Dagster (same code as the Dagster asset).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from analytics_core import cli_values, pg
from analytics_core.dead_letter import ReplayKeys, replay_headers
from analytics_core.dlq import store
from analytics_core.dlq.classify import (
    DEFAULT_MAX_ATTEMPTS,
    Defer,
    Park,
    ParkCause,
    Policy,
    Replay,
    Selection,
    Verdict,
    classify,
)
from analytics_core.dlq.kafka_io import DEFAULT_GROUP, DeadLetterReader, Resubmitter
from analytics_core.dlq.records import LetterRecord, deferred_row, parked_row, replayed_row
from analytics_core.dlq.tally import Origin, Outcome, Tally
from analytics_core.reasons import Reason
from analytics_core.registry import Conn
from analytics_core.settings import Settings, SettingsError

LOCK_CLASS = 7424004  # pg advisory lock class of reprocessing runs (key: the group id)


@dataclass(frozen=True)
class ReprocessOptions:
    selection: Selection = field(default_factory=Selection)
    policy: Policy = field(default_factory=Policy)
    group_id: str = DEFAULT_GROUP
    max_records: int = 1_000_000
    chunk_size: int = 5_000
    stall_timeout_s: float = 30.0


@dataclass
class ReprocessReport:
    tally: Tally
    group_id: str
    selection: Selection
    backlog_at_start: dict[int, int] = field(default_factory=dict)  # partition -> records
    committed: dict[int, int] = field(default_factory=dict)  # partition -> next offset
    read: int = 0
    replays_sent: int = 0
    busy: bool = False  # another run of the same consumer group held the lock: nothing done


Now = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def decide(
    records: list[LetterRecord], conn: Conn, policy: Policy, now: datetime
) -> list[tuple[LetterRecord, Verdict]]:
    statuses = store.client_statuses(conn, [r.client_id for r in records if r.client_id])
    out: list[tuple[LetterRecord, Verdict]] = []
    for r in records:
        if r.letter is None:
            verdict: Verdict = Park(ParkCause.UNREADABLE_ENVELOPE, r.envelope_error or "")
        else:
            status = statuses.get(r.letter.client_id) if r.letter.client_id else None
            verdict = classify(r.letter, status, policy, now)
        out.append((r, verdict))
    return out


def _apply(
    decided: list[tuple[LetterRecord, Verdict]],
    conn: Conn,
    resubmitter: Resubmitter,
    tally: Tally,
    origin: Origin,
    run_id: str | None,
    keys: ReplayKeys,
) -> int:
    """Make the verdicts durable: replays acknowledged first, then one PG transaction."""
    fates = store.Fates()
    outcomes: list[tuple[str, Outcome]] = []
    sent = 0
    for rec, verdict in decided:
        if isinstance(verdict, Replay):
            assert rec.letter is not None
            resubmitter.send(rec.value, rec.key, replay_headers(rec.letter, rec.value, keys))
            sent += 1
            fates.replayed.append(replayed_row(rec, run_id))
            if rec.deferred_id is not None:
                fates.resolved_replayed.append(rec.deferred_id)
            outcomes.append((rec.reason, Outcome.REPLAYED))
        elif isinstance(verdict, Park):
            fates.parked.append(parked_row(rec, verdict, run_id))
            if rec.deferred_id is not None:
                fates.resolved_parked.append(rec.deferred_id)
            outcomes.append((rec.reason, Outcome.PARKED))
        elif rec.deferred_id is not None:
            outcomes.append((rec.reason, Outcome.STILL_DEFERRED))
        else:
            assert isinstance(verdict, Defer)
            fates.deferred.append(deferred_row(rec, verdict, run_id))
            outcomes.append((rec.reason, Outcome.DEFERRED))
    if sent:
        resubmitter.flush()  # raises ResubmitFailed: nothing recorded, nothing committed
    if fates:
        store.record_fates(conn, fates)
    for reason, outcome in outcomes:
        tally.add(origin, reason, outcome)
    return sent


def retry_deferred(
    conn: Conn,
    topic: str,
    resubmitter: Resubmitter,
    options: ReprocessOptions,
    tally: Tally,
    now: datetime,
    run_id: str | None,
    keys: ReplayKeys,
) -> int:
    """Re-check the records deferred from dead-letter `topic` (this run's topic only)."""
    after_id, sent = 0, 0
    while True:
        batch = store.waiting_deferred(
            conn, topic, options.selection, after_id=after_id, limit=options.chunk_size
        )
        if not batch:
            return sent
        after_id = max(r.deferred_id or 0 for r in batch)
        decided = decide(batch, conn, options.policy, now)
        sent += _apply(decided, conn, resubmitter, tally, Origin.DEFERRED, run_id, keys)


def _try_lock(conn: Conn, group_id: str) -> bool:
    """One run per consumer group at a time (session lock, released when `conn` closes)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, group_id))
        row = cur.fetchone()
    conn.commit()
    return bool(row and row[0])


def reprocess(
    settings: Settings,
    options: ReprocessOptions,
    *,
    run_id: str | None = None,
    now: Now = _utcnow,
) -> ReprocessReport:
    problem = settings.replay_key_problem()
    if problem is not None:
        raise SettingsError(problem)
    keys = settings.replay.keys()
    tally = Tally()
    report = ReprocessReport(tally, options.group_id, options.selection)
    conn = pg.connect(settings.postgres)
    if not _try_lock(conn, options.group_id):
        conn.close()
        report.busy = True
        return report
    resubmitter = Resubmitter(settings.kafka)
    reader = DeadLetterReader(
        settings.kafka, options.group_id, stall_timeout_s=options.stall_timeout_s
    )
    try:
        report.replays_sent += retry_deferred(
            conn, settings.kafka.dead_letter_topic, resubmitter, options, tally, now(), run_id, keys
        )
        ranges = reader.open()
        report.backlog_at_start = {r.partition: r.backlog for r in ranges}
        for chunk in reader.chunks(options.chunk_size, options.max_records):
            report.read += len(chunk)
            chosen = [r for r in chunk if options.selection.selects(r.letter)]
            for r in chunk:
                if not options.selection.selects(r.letter):
                    tally.add(Origin.TOPIC, r.reason, Outcome.NOT_SELECTED)
            done = store.already_handled(conn, [r.coords for r in chosen])
            for r in chosen:
                if r.coords in done:
                    tally.add(Origin.TOPIC, r.reason, Outcome.ALREADY_HANDLED)
            todo = [r for r in chosen if r.coords not in done]
            decided = decide(todo, conn, options.policy, now())
            report.replays_sent += _apply(
                decided, conn, resubmitter, tally, Origin.TOPIC, run_id, keys
            )
            if not options.selection.filtered:
                report.committed.update(reader.commit(chunk))
    finally:
        reader.close()
        resubmitter.producer.flush(10)
        conn.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analytics_core.dlq.reprocess",
        description="Reprocess shared_dead_letter once: replay, park or defer every record.",
    )
    parser.add_argument(
        "--client-id", type=cli_values.client_id, help="only this client's dead letters"
    )
    parser.add_argument("--reason", choices=[r.value for r in Reason], help="only this reason")
    parser.add_argument(
        "--max-attempts",
        type=cli_values.whole(1),
        default=DEFAULT_MAX_ATTEMPTS,
        help="replays of one event before it is parked (default %(default)s)",
    )
    parser.add_argument(
        "--max-wait-days",
        type=cli_values.above_zero(36_500),
        default=7.0,
        help="how long an inactive client's events wait before they are parked (default 7)",
    )
    parser.add_argument(
        "--max-records",
        type=cli_values.whole(1, 2**62),
        default=1_000_000,
        help="dead letters read in this run at most (default %(default)s)",
    )
    parser.add_argument("--group-id", default=DEFAULT_GROUP)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = Settings.from_env()
        problem = settings.replay_key_problem()
        if problem is not None:
            raise SettingsError(problem)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    options = ReprocessOptions(
        selection=Selection(args.client_id, Reason(args.reason) if args.reason else None),
        policy=Policy(args.max_attempts, timedelta(days=args.max_wait_days)),
        group_id=args.group_id,
        max_records=args.max_records,
    )
    report = reprocess(settings, options)
    if report.busy:
        print(
            f"another reprocessing run of group {options.group_id} is in progress", file=sys.stderr
        )
        return 1
    print(f"read {report.read} dead letters ({options.selection.describe()})")
    print(report.tally.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
