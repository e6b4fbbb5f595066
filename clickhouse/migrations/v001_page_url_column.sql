-- The page URL of an event, extracted once at insert time from the JSON properties,
-- with a bloom-filter index for per-page queries. The router keeps inserting the
-- base columns; ClickHouse fills page_url for every new row.
ALTER TABLE events_base
    ADD COLUMN IF NOT EXISTS page_url String
    MATERIALIZED JSONExtractString(event_properties, 'url');

ALTER TABLE events_base
    ADD INDEX IF NOT EXISTS idx_page_url page_url TYPE bloom_filter(0.01) GRANULARITY 4;
