"""Moved to `analytics_core.kafka_reads` (the one bounded Kafka reader); these names stay
importable from here until the last importers (router, trace, reconciliation) move."""

from analytics_core.kafka_reads import ScanBounds, ScanResult, read_messages, scan_topic

__all__ = ["ScanBounds", "ScanResult", "read_messages", "scan_topic"]
