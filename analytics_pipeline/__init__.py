"""The Dagster code location of the analytics pipeline (see `definitions.py`)."""
