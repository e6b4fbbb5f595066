"""The client lifecycle jobs.

- `provision_client`: provisions one client (its partition) and reports its schema;
- `migrate_client`: applies pending ClickHouse migrations to one client (its partition);
- `deprovision_client`: launched from the UI to remove one client.

Deprovisioning is launched for the client's partition (the UI's partition picker; or config
`client_id`) and repeats the id in `confirm`; a mismatch (or an invalid id) is refused before
anything happens, as a clean failure with the reason and a `deprovision_refused` audit row.
Otherwise
`analytics_core.lifecycle.deprovision` marks the client deprovisioning (the router stops
routing it at once: cache invalidated), records the row counts, drops its ClickHouse
database, marks it deprovisioned and writes the audit row with who asked and this run's id;
then the client's partition is removed. Running it again on a deprovisioned client changes
nothing but adds an audit row saying so.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

import psycopg2
from dagster import Config, MetadataValue, OpExecutionContext, define_asset_job, job, op
from pydantic import Field

from analytics_core import lifecycle
from analytics_pipeline.defs.client_lifecycle.assets import client_database, client_schema
from analytics_pipeline.failures import TRANSIENT_RETRY, step_failure
from analytics_pipeline.partitions import CLIENTS_PARTITIONS_NAME, clients_partitions
from analytics_pipeline.resources import (
    ClickHouseResource,
    PostgresMetadataResource,
    RedisResource,
    open_connections,
)
from analytics_pipeline.run_history import cancel_queued_runs_for_client, running_runs_for_client
from analytics_pipeline.tags import STEP_TAG, requester

# client_schema runs after client_database and finds nothing pending: provisioning already
# applied every migration. It is in the job so the UI shows the schema of a new client.
provision_client_job = define_asset_job(
    name="provision_client",
    selection=[client_database, client_schema],
    description="Provision a client: ClickHouse database, schema, status active.",
)

migrate_client_job = define_asset_job(
    name="migrate_client",
    selection=[client_schema],
    description="Apply a client's pending ClickHouse migrations, in version order.",
)


class DeprovisionConfig(Config):
    confirm: str = Field(description="The client id again, to confirm")
    client_id: str | None = Field(
        default=None,
        description="The client to deprovision (default: the run's partition; if both are "
        "given they must agree)",
    )
    requested_by: str = Field(default="", description="Who asks for it (recorded in the audit log)")


def _client_of(
    context: OpExecutionContext, config: DeprovisionConfig
) -> str | lifecycle.StepFailed:
    """The client: the run's partition (launched for a partition from the UI) or config."""
    partition = context.partition_key if context.has_partition_key else None
    if partition is not None and config.client_id not in (None, partition):
        return _refused(
            partition,
            f"config client_id {config.client_id!r} is not the run's partition {partition!r}; "
            "nothing was changed",
        )
    client_id = partition or config.client_id
    if client_id is None:
        # No client id: step_failure says "no client given" instead of naming one.
        return _refused("", "launch the job for the client's partition (or set client_id)")
    return client_id


def _actor(context: OpExecutionContext, config: DeprovisionConfig) -> str:
    return requester(config.requested_by, context.run.tags)


def _refused(client_id: str, reason: str) -> lifecycle.StepFailed:
    return lifecycle.StepFailed(client_id, reason, refused=True)


def _audit_refusal(
    context: OpExecutionContext,
    postgres: PostgresMetadataResource,
    refusal: lifecycle.StepFailed,
    actor: str,
) -> None:
    try:
        with postgres.connect() as conn:
            lifecycle.record_refusal(
                conn,
                refusal.client_id,
                "deprovision",
                refusal.reason,
                run_id=context.run_id,
                actor=actor,
            )
    except psycopg2.Error as exc:
        context.log.warning(f"refusal not audited: PostgreSQL unreachable ({exc})".strip())


@op(retry_policy=TRANSIENT_RETRY)
def deprovision(
    context: OpExecutionContext,
    config: DeprovisionConfig,
    postgres: PostgresMetadataResource,
    clickhouse: ClickHouseResource,
    redis: RedisResource,
) -> None:
    client = _client_of(context, config)
    refusal = client if isinstance(client, lifecycle.StepFailed) else None
    if isinstance(client, str):
        reason = lifecycle.deprovision_refusal(client, config.confirm)
        refusal = None if reason is None else _refused(client, reason)
    if refusal is not None:
        # Refused before anything is read or changed; the refusal is audited if PostgreSQL
        # can be reached (it is an expected outcome: a clean failure, retried never).
        _audit_refusal(context, postgres, refusal, _actor(context, config))
        raise step_failure(refusal, "deprovisioning")
    client_id = str(client)
    busy = running_runs_for_client(context.instance, client_id, exclude_run_id=context.run_id)
    if busy:
        # Another lifecycle run works on this client: wait for it (retried as transient).
        raise step_failure(
            lifecycle.StepFailed(
                client_id, f"runs {busy} are working on this client", transient=True
            ),
            "deprovisioning",
        )
    with open_connections(postgres, clickhouse, redis=redis) as c:
        outcome = lifecycle.deprovision(
            c, client_id, config.confirm, run_id=context.run_id, actor=_actor(context, config)
        )
    if isinstance(outcome, lifecycle.StepFailed):
        raise step_failure(outcome, "deprovisioning")
    if context.instance.has_dynamic_partition(CLIENTS_PARTITIONS_NAME, client_id):
        context.instance.delete_dynamic_partition(CLIENTS_PARTITIONS_NAME, client_id)
    canceled = cancel_queued_runs_for_client(
        context.instance, client_id, f"client {client_id} was deprovisioned by run {context.run_id}"
    )
    if canceled:
        context.log.info(f"canceled {len(canceled)} queued run(s) of the client: {canceled}")
    context.log.info(
        f"client {client_id} deprovisioned; database {outcome.database} dropped"
        + (" (it was already deprovisioned)" if outcome.already else "")
    )
    context.add_output_metadata(
        {
            "client_id": MetadataValue.text(client_id),
            "database_dropped": MetadataValue.text(outcome.database),
            "rows_before": MetadataValue.json(outcome.rows_before),
            "already_deprovisioned": MetadataValue.bool(outcome.already),
            "queued_runs_canceled": MetadataValue.int(len(canceled)),
        }
    )


@job(
    name="deprovision_client",
    partitions_def=clients_partitions,
    tags={STEP_TAG: "deprovision"},
    description=(
        "Deprovision a client: launch it for the client's partition and repeat the client id "
        "in ops.deprovision.config.confirm. Drops the client's ClickHouse database; the "
        "router dead-letters its later events as client_inactive."
    ),
)
def deprovision_client_job() -> None:
    deprovision()
