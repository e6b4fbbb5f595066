"""`client_events` and its `reconciliation` check: every consumed event of a client is a row,
a dead letter or a parked record, per closed hour window.

`client_events` stands for the client's routed events (`<database>.events_base`); the router
writes it, Dagster never materializes it, so it is declared as an external asset
(AssetSpec) partitioned by client. The check runs per partition through `reconcile_client`
(jobs.py) and the hourly schedule (schedules.py); it can also be launched from the UI on any
partition of `client_events`.

A failed check names the client, each window and how many events, with the numbers as
metadata (a Markdown table per window and the whole report as JSON). A client that can not
be reconciled (no accounting table yet, no database) is a WARN failure with the reason.
Settings: the `reconciliation` resource (RECONCILIATION_*, see resources.py).
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetSpec,
    MetadataValue,
    asset_check,
)

from analytics_core.reconciliation.model import Report, Unavailable, window_label
from analytics_core.reconciliation.render import markdown_table, summary
from analytics_core.reconciliation.run import reconcile_client
from analytics_pipeline.defs.client_lifecycle.assets import client_database
from analytics_pipeline.defs.reconciliation.resources import ReconciliationResource
from analytics_pipeline.partitions import clients_partitions
from analytics_pipeline.resources import (
    ClickHouseResource,
    KafkaResource,
    PostgresMetadataResource,
    open_connections,
)

CHECK_NAME = "reconciliation"

client_events = AssetSpec(
    key="client_events",
    partitions_def=clients_partitions,
    deps=[client_database],
    group_name="client_lifecycle",
    kinds={"clickhouse"},
    description=(
        "The client's routed events (events_base in its database), written by the router; "
        "the reconciliation check proves none was lost."
    ),
)


def check_result(report: Report | Unavailable) -> AssetCheckResult:
    if isinstance(report, Unavailable):
        return AssetCheckResult(
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
        passed=report.passed,
        severity=AssetCheckSeverity.ERROR,
        description=summary(report),
        metadata=metadata,
    )


@asset_check(
    asset=client_events.key,
    name=CHECK_NAME,
    partitions_def=clients_partitions,
    description=(
        "Per closed hour window: router-accounted consumed events = rows in the client's "
        "database + dead letters (incl. parked); every consumed offset accounted for."
    ),
)
def reconciliation_check(
    context: AssetCheckExecutionContext,
    postgres: PostgresMetadataResource,
    clickhouse: ClickHouseResource,
    kafka: KafkaResource,
    reconciliation: ReconciliationResource,
) -> AssetCheckResult:
    client_id = context.partition_key
    with open_connections(postgres, clickhouse, kafka=kafka) as c:
        report = reconcile_client(c, client_id, reconciliation.options())
    context.log.info(summary(report))
    return check_result(report)
