"""The row layout of `<client database>.events_base`, shared by writers and readers.

Invariant: `EVENT_COLUMNS` lists exactly the columns of
clickhouse/schemas/01_events_base.sql, in order; rows are tuples in that order.
Migrations may add columns with defaults; writers keep inserting these names.
"""

from __future__ import annotations

EVENTS_TABLE = "events_base"

EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "event_name",
    "event_timestamp",
    "user_id",
    "event_properties",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "batch_index",
    "origin_partition",
    "origin_offset",
    "attempt",
    "sent_at",
    "received_at",
    "ingested_at",
    "router_instance",
)
