"""Dead-letter reprocessing: read `shared_dead_letter`, give every record one fate.

Fates (see `classify`):
- **replayed**: the reason may heal (`reasons.RECOVERABLE`) and the client is active now:
  the ORIGINAL bytes go back to `shared_raw_events` with `replay_headers(letter)`, so the
  router keeps the origin identity (same derived event ids: a replay never duplicates
  rows) and counts the attempt;
- **parked**: it will not heal by itself (a permanent reason, too many attempts, the client
  is gone, it waited too long, unreadable envelope): stored in PostgreSQL
  `parked_dead_letters` with reason, detail, original bytes and coordinates, for a human;
- **deferred**: recoverable but the client is not active yet (pending, failed, not
  registered): stored in PostgreSQL `deferred_dead_letters` and re-checked at the start of
  every run; replayed once the client is active, parked after `max_wait`. Holding them in
  Kafka instead would mean either not committing past them (one pending client would block
  every record behind it) or re-publishing them on every run (the topic grows each run and
  a crash mid-way duplicates them); a table is durable, bounded, queryable.

Why PostgreSQL for parked records: they are few, need updates by humans (triage), must be
unique per dead-letter coordinate (a UNIQUE constraint gives idempotency for free), and
sit beside the client registry they are triaged against. ClickHouse is for volume.

Durability order for a chunk of records: produce the replays and flush (acks=all,
idempotent producer), then write parked/deferred/replayed rows in one PostgreSQL
transaction, then commit the Kafka offsets. A crash between steps re-reads the chunk:
the PostgreSQL rows are keyed by the dead letter's own topic/partition/offset, so the
re-run skips what is recorded and re-sends at worst a replay, which collapses on its
event id. Every record lands in exactly one of the three tables, so counts reconcile.

Filters (one client, one reason): a filtered run reads from the main consumer group's
committed position to the end of the topic but never commits it; the records it handles
are recorded in PostgreSQL (above) and skipped by later runs; the records it does not
select stay in Kafka for the next unfiltered run. No per-filter consumer group to clean
up, no re-publishing.

Modules: `classify` and `tally` (pure), `records` (pure: a consumed message as data and
as table rows), `store` (PostgreSQL), `kafka_io` (consumer and producer), `reprocess`
(the thin loop, and `python -m analytics_core.dlq.reprocess`).
"""
