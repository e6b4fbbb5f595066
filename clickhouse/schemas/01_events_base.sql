-- Base schema of every client database (applied by provisioning, version 0).
-- The database is selected by the migration engine; never name it here.
--
-- ReplacingMergeTree keyed by event id: a replay of the same event (crash
-- re-read, dead-letter reprocessing, producer retry) collapses to one row.
-- Queries that must be exact before merges use FINAL or the `events` view.
-- non_replicated_deduplication_window makes plain inserts honour the router's
-- insert_deduplication_token, so a retried INSERT of the same batch is a no-op.
CREATE TABLE IF NOT EXISTS events_base
(
    event_id         UUID,
    event_name       LowCardinality(String),
    event_timestamp  DateTime64(3, 'UTC'),
    user_id          String,
    event_properties String,
    kafka_topic      LowCardinality(String),
    kafka_partition  UInt32,
    kafka_offset     UInt64,
    batch_index      UInt32,
    origin_partition UInt32,
    origin_offset    UInt64,
    attempt          UInt16,
    sent_at          Nullable(DateTime64(3, 'UTC')),
    received_at      DateTime64(3, 'UTC'),
    ingested_at      DateTime64(3, 'UTC'),
    router_instance  LowCardinality(String)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_timestamp)
ORDER BY (toDate(event_timestamp), event_name, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS events AS SELECT * FROM events_base FINAL;
