"""Trace: the `trace_event` job."""

from __future__ import annotations

from dagster import Definitions

from analytics_pipeline.defs.trace.jobs import trace_event_job

defs = Definitions(jobs=[trace_event_job])
