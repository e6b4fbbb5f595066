"""The real-time router: Kafka `shared_raw_events` -> each client's ClickHouse database.

A separate long-running process; it must never import dagster.
"""

VERSION = "0.1.0"
