"""Shared domain code for the analytics pipeline.

Both the real-time router (`router/`) and the Dagster code location
(`analytics_pipeline/`) import from here, so there is one definition of the
event contract, the naming rules for client databases, the client registry
and the ClickHouse migration engine. This package never imports dagster.
"""
