"""The client a per-client step works on: its run's `clients` partition.

Invariants:
- a per-client run names its client only by its partition (`dagster/partition`). A run
  launched without one (the API or GraphQL; the UI always asks for the partition) is refused
  before anything is read, never left to Dagster's invariant error;
- Dagster refuses to record any output (materialization, observation, check result) of a
  partition that does not exist, and fails the step with its own error. A run queued before
  its client's partition was removed (a backfill run after a deprovisioning) must therefore
  record nothing: `removed_partition` says so before the step does any work, and the step
  skips (the run succeeds) or refuses.
"""

from __future__ import annotations

from dagster import AssetExecutionContext, OpExecutionContext

from analytics_pipeline.failures import refusal
from analytics_pipeline.partitions import CLIENTS_PARTITIONS_NAME

StepContext = OpExecutionContext | AssetExecutionContext


def client_of_run(context: StepContext, step: str) -> str:
    """The run's client (its partition key); a refusal if the run has no partition.
    `step` names what needs the client, e.g. "provisioning"."""
    if not context.has_partition_key:
        raise refusal(f"{step} needs a client: launch it for the client's partition")
    return context.partition_key


def removed_partition(context: StepContext, client_id: str) -> str | None:
    """Why the run's partition is gone (None while it exists)."""
    if context.instance.has_dynamic_partition(CLIENTS_PARTITIONS_NAME, client_id):
        return None
    return (
        f"client {client_id!r} has no partition any more (deprovisioned, or removed after "
        "this run was queued)"
    )


def live_client(context: StepContext, step: str) -> str:
    """The run's client for a step that must record an output: refused (nothing read or
    changed) without a partition, or when the partition was removed after the run was
    queued (no output can be recorded for it)."""
    client_id = client_of_run(context, step)
    gone = removed_partition(context, client_id)
    if gone is not None:
        raise refusal(f"{step} refused: {gone}; nothing was changed", client_id=client_id)
    return client_id
