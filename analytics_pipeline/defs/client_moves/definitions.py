"""Client moves: the `move_client` job."""

from __future__ import annotations

from dagster import Definitions

from analytics_pipeline.defs.client_moves.jobs import move_client_job

defs = Definitions(jobs=[move_client_job])
