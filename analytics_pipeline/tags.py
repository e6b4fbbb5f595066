"""Run tags of client lifecycle runs.

`CLIENT_TAG` names the client a run works on. dagster.yaml limits runs to one in progress per
unique value of this tag and of `dagster/partition` (which Dagster sets on every partitioned
run, including those launched from the UI and by backfills), so two lifecycle runs never
work on the same client at once.
"""

from __future__ import annotations

CLIENT_TAG = "analytics/client_id"
STEP_TAG = "analytics/lifecycle_step"

# Tags Dagster itself sets: on partitioned runs, and on runs a sensor requested with a run key.
PARTITION_TAG = "dagster/partition"
RUN_KEY = "dagster/run_key"


def client_tags(client_id: str, step: str) -> dict[str, str]:
    return {CLIENT_TAG: client_id, STEP_TAG: step}
