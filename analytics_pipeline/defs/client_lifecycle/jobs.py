"""The client lifecycle jobs.

- `provision_client`: provisions one client (its partition) and reports its schema;
- `migrate_client`: applies pending ClickHouse migrations to one client (its partition);
- `deprovision_client`: launched from the UI to remove one client.

Deprovisioning config names the client and repeats it in `confirm`; a mismatch (or an
invalid id) is refused before anything happens. Otherwise
`analytics_core.lifecycle.deprovision` marks the client deprovisioning (the router stops
routing it at once: cache invalidated), records the row counts, drops its ClickHouse
database, marks it deprovisioned and writes the audit row with who asked and this run's id;
then the client's partition is removed. Running it again on a deprovisioned client changes
nothing but adds an audit row saying so.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from dagster import Config, MetadataValue, OpExecutionContext, define_asset_job, job, op
from pydantic import Field

from analytics_core import lifecycle
from analytics_core.naming import client_id_problem
from analytics_pipeline.defs.client_lifecycle.assets import client_database, client_schema
from analytics_pipeline.failures import TRANSIENT_RETRY, step_failure
from analytics_pipeline.partitions import CLIENTS_PARTITIONS_NAME
from analytics_pipeline.resources import (
    ClickHouseResource,
    PostgresMetadataResource,
    RedisResource,
    open_connections,
)
from analytics_pipeline.run_history import running_runs_for_client
from analytics_pipeline.tags import STEP_TAG

USER_TAGS = ("dagster/user", "user")

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
    client_id: str = Field(description="Id of the client to deprovision")
    confirm: str = Field(description="The same client id again, to confirm")
    requested_by: str = Field(default="", description="Who asks for it (recorded in the audit log)")


def _actor(context: OpExecutionContext, config: DeprovisionConfig) -> str:
    if config.requested_by.strip():
        return config.requested_by.strip()[:200]
    for tag in USER_TAGS:
        user = context.run.tags.get(tag)
        if user:
            return user
    return "dagster"


def _refused(client_id: str, reason: str) -> lifecycle.StepFailed:
    return lifecycle.StepFailed(client_id, reason, refused=True)


@op(retry_policy=TRANSIENT_RETRY)
def deprovision(
    context: OpExecutionContext,
    config: DeprovisionConfig,
    postgres: PostgresMetadataResource,
    clickhouse: ClickHouseResource,
    redis: RedisResource,
) -> None:
    client_id = config.client_id
    # Refusals first: nothing is read or written before the confirmation matches.
    if config.confirm != client_id:
        raise step_failure(
            _refused(
                client_id,
                f"confirmation {config.confirm!r} does not match client id {client_id!r}; "
                "nothing was changed",
            ),
            "deprovisioning",
        )
    problem = client_id_problem(client_id)
    if problem is not None:
        raise step_failure(_refused(client_id, problem), "deprovisioning")
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
        }
    )


@job(
    name="deprovision_client",
    tags={STEP_TAG: "deprovision"},
    description=(
        "Deprovision a client: set ops.deprovision.config.client_id and repeat it in "
        "confirm. Drops the client's ClickHouse database; the router dead-letters its later "
        "events as client_inactive."
    ),
)
def deprovision_client_job() -> None:
    deprovision()
