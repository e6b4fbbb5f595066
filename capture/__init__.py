"""The capture service: HTTP ingestion for analytics SDKs in front of `shared_raw_events`.

Segment's HTTP Tracking API (also spoken by RudderStack's SDKs) and PostHog's capture API
are mapped to event contract v1 and produced to Kafka; the router does the rest. This
package never imports Dagster.
"""

VERSION = "0.1.0"  # the project's (pyproject.toml), like the router's
