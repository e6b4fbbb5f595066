"""Trace: every place one event is or was, from the Dagster UI."""
