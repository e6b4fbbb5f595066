-- Router accounting: what each router consumed, per Kafka offset range, with every
-- event's fate counted. Lives in the shared operations database (PIPELINE_OPS_DATABASE,
-- default `pipeline_ops`), never in a client database.
--
-- One row per (consumer_group, topic, partition, first_offset): the range [first_offset, next_offset)
-- that one offset commit covered. The router writes the row BEFORE committing the
-- offsets, with an insert_deduplication_token. After a crash, the replay starts at the
-- same first_offset and its row REPLACES the earlier one (ReplacingMergeTree on the
-- range start), so ranges never double count. Read with FINAL.
--
-- `counts` keys are 'client_id|outcome|reason|window_start_unix' where outcome is
-- 'routed' or 'dead_lettered', reason is '' for routed events, client_id is '' when
-- unknown (invalid JSON...), window_start is the hour of the router's receive time.
CREATE TABLE IF NOT EXISTS router_consumption
(
    consumer_group  LowCardinality(String),
    topic           LowCardinality(String),
    partition       UInt32,
    first_offset    UInt64,
    next_offset     UInt64,
    messages        UInt64,
    events          UInt64,
    counts          Map(String, UInt64),
    router_instance LowCardinality(String),
    recorded_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(recorded_at)
ORDER BY (consumer_group, topic, partition, first_offset);
