"""Run tags of client lifecycle runs.

`CLIENT_TAG` names the client a run works on. dagster.yaml limits runs to one in progress per
unique value of this tag and of `dagster/partition` (which Dagster sets on every partitioned
run, including those launched from the UI and by backfills), so two lifecycle runs never
work on the same client at once.
"""

from __future__ import annotations

from collections.abc import Mapping

CLIENT_TAG = "analytics/client_id"
STEP_TAG = "analytics/lifecycle_step"

# Tags Dagster itself sets: on partitioned runs, and on runs a sensor requested with a run key.
PARTITION_TAG = "dagster/partition"
RUN_KEY = "dagster/run_key"


# The run queue takes higher priorities first (dagster/priority; a run without it is 0, as
# the UI launches): a new client's provisioning, then its first observation, go ahead of
# the hourly reconciliation sweep (one run per client), which only fills idle slots. Without
# it a client added at ten past waited minutes behind a hundred scheduled runs.
PRIORITY_TAG = "dagster/priority"
PROVISION_PRIORITY = 10
FIRST_OBSERVATION_PRIORITY = 5
SWEEP_PRIORITY = -10


def priority(level: int) -> dict[str, str]:
    return {PRIORITY_TAG: str(level)}


# Tags that name who launched a run (the UI's user, or a caller's own).
USER_TAGS = ("dagster/user", "user")


def client_tags(client_id: str, step: str) -> dict[str, str]:
    return {CLIENT_TAG: client_id, STEP_TAG: step}


def requester(requested_by: str, run_tags: Mapping[str, str]) -> str:
    """Who asked for a run, for the audit log: the config's `requested_by`, else the user
    tag of the run, else "dagster"."""
    if requested_by.strip():
        return requested_by.strip()[:200]
    for tag in USER_TAGS:
        user = run_tags.get(tag)
        if user:
            return user
    return "dagster"
