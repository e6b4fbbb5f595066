"""`client_events` and its `reconciliation` check: every consumed event of a client is a row,
a dead letter or a parked record, per closed hour window.

`client_events` stands for the client's routed events (`<database>.events_base`). The router
writes it and Dagster never materializes it: it is an observable asset, partitioned by
client, downstream of the client's database. Observing a partition records Dagster's
standard table metadata of the client's events table (`dagster/row_count`, `table_name`,
`column_schema`) and runs the reconciliation check, in one step. That is what
`reconcile_client` (jobs.py, partitioned: the Jobs page offers the client picker), the
hourly schedule (schedules.py) and the asset's Observe button run, for one client each.

A failed check names the client, each window and how many events, with the numbers as
metadata (a Markdown table per window and the whole report as JSON). A client that can not
be reconciled (no accounting table yet, no database) is a WARN failure with the reason.
Settings: the `reconciliation` resource (RECONCILIATION_*, see resources.py).
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

import warnings
from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BetaWarning,
    MetadataValue,
    ObserveResult,
    PreviewWarning,
    multi_observable_source_asset,
)

from analytics_core.events_table import EVENTS_TABLE
from analytics_core.reconciliation.model import Report, Unavailable, window_label
from analytics_core.reconciliation.render import markdown_table, summary
from analytics_core.reconciliation.run import Placement, reconcile_client
from analytics_core.reconciliation.run import client_database as database_of
from analytics_pipeline.client_partition import live_client
from analytics_pipeline.defs.client_lifecycle.assets import client_database
from analytics_pipeline.defs.reconciliation.resources import ReconciliationResource
from analytics_pipeline.partitions import clients_partitions
from analytics_pipeline.resources import (
    ClickHouseResource,
    KafkaResource,
    PostgresMetadataResource,
    open_connections,
)
from analytics_pipeline.table_metadata import read_table_metadata

CHECK_NAME = "reconciliation"
EVENTS_KEY = AssetKey("client_events")


def check_result(report: Report | Unavailable) -> AssetCheckResult:
    if isinstance(report, Unavailable):
        return AssetCheckResult(
            check_name=CHECK_NAME,
            asset_key=EVENTS_KEY,
            passed=not report.is_failure,
            severity=AssetCheckSeverity.WARN,
            description=summary(report),
            metadata={
                "client_id": MetadataValue.text(report.client_id),
                "not_reconciled": MetadataValue.text(report.reason),
            },
        )
    totals = report.totals()
    metadata: dict[str, MetadataValue] = {
        "client_id": MetadataValue.text(report.client_id),
        "database": MetadataValue.text(report.database),
        **{name: MetadataValue.int(value) for name, value in totals.items()},
        "windows": MetadataValue.md(markdown_table(report)),
        "report": MetadataValue.json(report.to_dict()),
    }
    if report.problems:
        metadata["problems"] = MetadataValue.md(
            "\n".join(f"- {p.message}" for p in report.problems)
        )
        bad = sorted({p.window for p in report.problems if p.window is not None})
        metadata["failed_windows"] = MetadataValue.text(", ".join(window_label(w) for w in bad))
    return AssetCheckResult(
        check_name=CHECK_NAME,
        asset_key=EVENTS_KEY,
        passed=report.passed,
        severity=AssetCheckSeverity.ERROR,
        description=summary(report),
        metadata=metadata,
    )


def _observe(
    context: AssetExecutionContext,
    postgres: PostgresMetadataResource,
    clickhouse: ClickHouseResource,
    kafka: KafkaResource,
    reconciliation: ReconciliationResource,
) -> Iterator[ObserveResult | AssetCheckResult]:
    # Without a partition (only through the API) or for a removed one: a refusal.
    client_id = live_client(context, "reconciliation")
    with open_connections(postgres, clickhouse, kafka=kafka) as c:
        place = database_of(c.registry, client_id)
        observed = (
            {
                "clickhouse_target": MetadataValue.text(place.target),
                **read_table_metadata(c.clickhouse_for(place.target), place.database, EVENTS_TABLE),
            }
            if isinstance(place, Placement) and place.target in c.targets
            else {
                "not_observed": MetadataValue.text(
                    place.reason
                    if isinstance(place, Unavailable)
                    else f"ClickHouse target {place.target!r} is not configured"
                )
            }
        )
        report = reconcile_client(c, client_id, reconciliation.options())
    context.log.info(summary(report))
    yield ObserveResult(
        asset_key=EVENTS_KEY,
        metadata={"client_id": MetadataValue.text(client_id), **observed},
    )
    yield check_result(report)


# Two Dagster features this asset needs are not GA: observable assets with checks (beta) and
# partitioned checks (preview; one evaluation per client). Their warnings are silenced here,
# where the choice is made, instead of repeating in every process that loads the code.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    client_events = multi_observable_source_asset(
        name="client_events_observation",
        specs=[
            AssetSpec(
                key=EVENTS_KEY,
                deps=[client_database],
                partitions_def=clients_partitions,
                group_name="client_lifecycle",
                kinds={"clickhouse"},
                description=(
                    "The client's routed events (events_base in its database), written by the "
                    "router; observing a partition records its size and runs the "
                    "reconciliation check, which proves none was lost."
                ),
            )
        ],
        partitions_def=clients_partitions,
        check_specs=[
            AssetCheckSpec(
                CHECK_NAME,
                asset=EVENTS_KEY,
                partitions_def=clients_partitions,
                description=(
                    "Per closed hour window: router-accounted consumed events = rows in the "
                    "client's database + dead letters (incl. parked); every consumed offset "
                    "accounted for."
                ),
            )
        ],
    )(_observe)
