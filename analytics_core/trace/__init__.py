"""Trace one event: every place it is or was in the pipeline.

`python -m analytics_core.trace EVENT_ID [--client ID] [--since 7d] [--max-messages N] [--json]`

Sources, each read by its own module:
- `clickhouse_io`: the event's rows in the client's `events_base` (with --client), else in
  every client database of the registry (merge() over chunks of databases): database,
  table, Kafka topic/partition/offset of the copy that was routed, batch index, origin
  coordinates, attempt, received/ingested time, router instance. Physical rows are listed
  (before merges a replayed event may briefly have two);
- `kafka_io`: dead letters on `shared_dead_letter` whose `dl-event-id` is the id, or whose
  derived id (uuid5 of dl-origin-* and dl-batch-index, for events without an id of their
  own) is the id; bounded by --since and --max-messages (`analytics_core.kafka_reads`); and the raw
  messages at the coordinates found (origin, routed copy, failed copies, replays);
- `postgres_io`: the reprocessing outcome: `replayed_dead_letters`, `parked_dead_letters`,
  `deferred_dead_letters` (issue 4's tables; their absence is reported, not an error).

`model` holds the typed report, `render` the text output, `run` puts them together. The
Dagster job `trace_event` (analytics_pipeline/jobs_trace.py) runs the same code.
"""
