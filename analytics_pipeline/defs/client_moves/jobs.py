"""`move_client`: move one client's database to another ClickHouse target.

Launched from the UI for the client's partition (Jobs > move_client > the client picker),
with `ops.move.config.target` naming the destination (a CLICKHOUSE_TARGETS name, or
`default`). The op runs `analytics_core.moves.run.move_client`: copy, switch the registry
(router caches invalidated), fence the old table, copy what arrived meanwhile, verify, drop
the old copy; each step is recorded in PostgreSQL `client_moves` and audited. A run that
fails or is killed at any point is finished by launching the job again with the same target
(Dagster retries transient failures, e.g. a target briefly unreachable, by itself). A
request that can not be honoured (unknown target, inactive client, another move open) is a
clean refusal that changes nothing. `abandon: true` gives up a move that has not switched.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from dagster import MetadataValue, OpExecutionContext, job, op
from pydantic import Field

from analytics_core import lifecycle
from analytics_core.moves.run import MoveOptions, abandon_move, move_client
from analytics_pipeline.failures import TRANSIENT_RETRY, refusal, step_failure
from analytics_pipeline.partitions import clients_partitions
from analytics_pipeline.resources import (
    ClickHouseResource,
    PostgresMetadataResource,
    RedisResource,
    open_connections,
)
from analytics_pipeline.run_config import RefusingConfig
from analytics_pipeline.run_history import running_runs_for_client
from analytics_pipeline.tags import STEP_TAG, requester


class MoveConfig(RefusingConfig):
    target: str = Field(
        default="",
        description="The ClickHouse target to move the client to: a CLICKHOUSE_TARGETS name "
        "or 'default'. Run again with the same target to finish an interrupted move.",
    )
    abandon: bool = Field(
        default=False,
        description="Give up the client's unfinished move instead (only before its switch)",
    )
    grace_s: float = Field(
        default=MoveOptions.grace_s,
        ge=0,
        le=86_400,
        description="Seconds between the registry switch and the fence of the old table",
    )
    requested_by: str = Field(default="", description="Who asks (recorded in the audit log)")


@op(retry_policy=TRANSIENT_RETRY)
def move(
    context: OpExecutionContext,
    config: MoveConfig,
    postgres: PostgresMetadataResource,
    clickhouse: ClickHouseResource,
    redis: RedisResource,
) -> None:
    if not context.has_partition_key:
        raise refusal("move_client needs a client: launch it for the client's partition")
    client_id = context.partition_key
    if config.abandon == bool(config.target.strip()):
        raise refusal(
            "set either target (where to move the client) or abandon: true", client_id=client_id
        )
    busy = running_runs_for_client(context.instance, client_id, exclude_run_id=context.run_id)
    if busy:
        # Another lifecycle run works on this client: wait for it (retried as transient).
        raise step_failure(
            lifecycle.StepFailed(
                client_id, f"runs {busy} are working on this client", transient=True
            ),
            "move",
        )
    actor = requester(config.requested_by, context.run.tags)
    with open_connections(postgres, clickhouse, redis=redis) as c:
        if config.abandon:
            dropped = abandon_move(c, client_id, run_id=context.run_id, actor=actor)
            if isinstance(dropped, lifecycle.StepFailed):
                raise step_failure(dropped, "abandoning the move")
            context.log.info(f"move {dropped.move_id} of {client_id} to {dropped.dest} abandoned")
            return
        moved = move_client(
            c,
            client_id,
            config.target.strip(),
            run_id=context.run_id,
            actor=actor,
            migrations=clickhouse.load_migrations(),
            options=MoveOptions(grace_s=config.grace_s),
            progress=context.log.info,
        )
    if isinstance(moved, lifecycle.StepFailed):
        raise step_failure(moved, "move")
    context.add_output_metadata(
        {
            "client_id": MetadataValue.text(client_id),
            "database": MetadataValue.text(moved.database),
            "from_target": MetadataValue.text(moved.source),
            "to_target": MetadataValue.text(moved.dest),
            "already_there": MetadataValue.bool(moved.already),
            "move_id": MetadataValue.int(moved.move_id or 0),
            "counts": MetadataValue.json(moved.counts),
        }
    )


@job(
    name="move_client",
    partitions_def=clients_partitions,
    tags={STEP_TAG: "move"},
    description=(
        "Move a client's ClickHouse database to another target: launch it for the client's "
        "partition with ops.move.config.target. Copies, switches the registry, fences the "
        "old table, copies the rest, verifies, drops the old copy; re-run it to resume."
    ),
)
def move_client_job() -> None:
    move()
