"""Reconciliation: prove per client and per hour window that no consumed event was lost.

The router writes one accounting row per committed offset range into
`<PIPELINE_OPS_DATABASE>.router_consumption` (clickhouse/ops/01_router_consumption.sql):
per consumer group, topic and partition, the ranges are contiguous, and each range counts
every event's fate under keys `client_id|outcome|reason|window_start_unix`. A range row is
written only once every event in it is durable (row acknowledged by ClickHouse, dead letter
acknowledged by Kafka), so at any moment the accounted counts can be compared with what is
observable:

- routed      -> stored copies in the client's `events_base`: one per Kafka coordinates
                 (topic, partition, offset, batch index), without FINAL, as the router counts
                 every routed copy (a producer duplicate is two), matched to the range that
                 holds their Kafka offset (ASOF join), window = the range's window for the
                 client (a crash re-read keeps the first received_at; the range decides);
                 plus copies a merge collapsed into a stored copy of the same event, proven
                 from Kafka for windows short of rows (`duplicates`). Duplicates are
                 reported (`duplicates_stored`, `duplicates_collapsed`), never missing;
- dead_lettered -> letters on `shared_dead_letter` whose dl-source-* coordinates fall in a
                 range (Kafka scan bounded by the lookback), plus letters parked in
                 PostgreSQL `parked_dead_letters` (the breakdown `parked`);
- offsets     -> gaps between a group's ranges are offsets committed without accounting.

Rows or letters past the last range of a partition are in flight (their range is not
written yet) and are not judged. A window is judged ("closed") when no range counting it was
recorded during the grace period. Anything else that does not add up is a problem naming the
client, the window and how many events.

Modules (pure logic apart from I/O, one job each):
- `model`      typed inputs and results (pure);
- `reconcile`  the pure function from accounting + observations to a per-window report;
- `accounting` reads router_consumption (ClickHouse);
- `observed`   reads the client's rows (ClickHouse), dead letters (Kafka), parked (PostgreSQL),
                and messages read back to prove collapsed duplicates (Kafka);
- `duplicates` which routed copies a merge collapsed, not lost (pure);
- `run`        one reconciliation of one client, and `python -m analytics_core.reconciliation`.

Environment variables (read here with the `analytics_core.settings` helpers):

| variable                          | default | meaning                                        |
|-----------------------------------|---------|------------------------------------------------|
| RECONCILIATION_GRACE_S            | 300     | a window is judged once no range counting it   |
|                                   |         | was recorded for this many seconds             |
| RECONCILIATION_LOOKBACK_HOURS     | 48      | windows (and dead letters) older are not read  |
| RECONCILIATION_MAX_DEAD_LETTERS   | 500000  | bound of the dead-letter scan per check        |
| RECONCILIATION_CONSUMER_GROUPS    | (all)   | comma list: only these router consumer groups  |
"""
