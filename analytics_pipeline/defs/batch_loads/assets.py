"""`batch/users` and `batch/page_views`: a client's landing-zone files loaded by dlt into its
own ClickHouse database, one partition of `clients` per client.

The assets are dagster-dlt `@dlt_assets`. The dlt source and pipeline given to the
decorator only declare the assets (one per dlt resource); each run builds the real ones
from the partition's registry row (`analytics_core.batch.client_load.plan_client_load`):
the client's database in the destination credentials and one pipeline name per client.
`DagsterDltResource.run` then drops the local dlt state, restores it (the file ledger)
from the client's database, loads, and fails the run if a load job failed.

- Only active clients with a batch source load. Any other partition is skipped: the run
  succeeds, logs why, and records a materialization with `skipped: true`, the reason and
  `rows_loaded: 0`. (Not materializing would make every backfill that includes a pending
  client end "completed with failures", and retrying it would fail the same way: an error
  storm for an expected case.)
- Materialization metadata per table, ours first: the client's database and landing URL,
  Dagster's standard table entries (`dagster/table_name`, `dagster/row_count` = rows now in
  the table, so a re-run that loads nothing still shows the table's size,
  `dagster/column_schema` from ClickHouse), rows loaded by this run, files consumed, files
  rejected (path, line, reason), unchanged files, dlt load id(s); then dlt's own entries
  that say something (load times, first run), not its empty dataset name or job list.
  Rejected files are also logged as warnings and written to PostgreSQL `batch_files`.
- Backfills run one partition per run (no backfill policy: each run carries
  `dagster/partition`, so dagster.yaml's per-partition run limit keeps two loads of one
  client from overlapping; a `BackfillPolicy` would tag runs with partition ranges instead).

The assets are built by `build_batch_assets(working_dir)` when the definitions load (the
declaration pipeline needs dlt's working directory, under the state dir, which is settings).

Resource keys: `dlt` (DagsterDltResource, see definitions.py), `postgres`, `clickhouse`.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from collections.abc import Iterator, Mapping
from typing import Any

import dlt as dlt_lib
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Failure,
    MaterializeResult,
    MetadataValue,
)
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData
from dlt.destinations import clickhouse as clickhouse_destination

from analytics_core.batch.client_load import Broken, LoadPlan, Skipped, plan_client_load
from analytics_core.batch.file_log import write_file_log
from analytics_core.batch.pipeline import telemetry_off_by_default
from analytics_core.batch.report import TableReport
from analytics_core.batch.source import landing_zone_source
from analytics_core.batch.tables import TABLES
from analytics_pipeline.client_partition import client_of_run, removed_partition
from analytics_pipeline.defs.client_lifecycle.assets import client_database
from analytics_pipeline.partitions import clients_partitions
from analytics_pipeline.resources import (
    ClickHouseResource,
    PostgresMetadataResource,
    open_connections,
)
from analytics_pipeline.table_metadata import read_table_metadata

BATCH_GROUP = "batch_loads"
KEY_PREFIX = "batch"
_DESCRIPTIONS = {
    "users": "The client's users from its landing zone (merged on user_id).",
    "page_views": "The client's page views from its landing zone (merged on page_view_id).",
}


class BatchLoadTranslator(DagsterDltTranslator):
    """Asset key `batch/<table>`, downstream of the client's database."""

    def get_asset_spec(self, data: DltResourceTranslatorData) -> AssetSpec:
        name = str(data.resource.name)
        return (
            super()
            .get_asset_spec(data)
            .replace_attributes(
                key=AssetKey([KEY_PREFIX, name]),
                deps=[client_database.key],
                group_name=BATCH_GROUP,
                description=_DESCRIPTIONS.get(name),
            )
        )


def batch_asset_key(table: str) -> AssetKey:
    return AssetKey([KEY_PREFIX, table])


def _table_metadata(
    plan: LoadPlan, table: TableReport, load_ids: list[str], standard: dict[str, Any]
) -> dict[str, Any]:
    """Ours first: what this run did, then the table's totals (Dagster's standard entries:
    rows now in the table, its columns)."""
    m = table.metadata()
    return {
        "client_id": MetadataValue.text(plan.client_id),
        "database": MetadataValue.text(plan.database),
        "landing_zone": MetadataValue.text(plan.source_url),
        "clickhouse_target": MetadataValue.text(plan.target),
        **standard,
        "rows_loaded": MetadataValue.int(m["rows_loaded"]),
        "files_consumed": MetadataValue.json(m["files_consumed"]),
        "files_consumed_count": MetadataValue.int(len(m["files_consumed"])),
        "files_rejected": MetadataValue.json(m["files_rejected"]),
        "files_rejected_count": MetadataValue.int(len(m["files_rejected"])),
        "files_unchanged": MetadataValue.int(m["files_unchanged"]),
        # dlt's id of this run's load; a run with nothing new to load made none.
        "load_id": MetadataValue.text(load_ids[-1] if load_ids else "none: nothing new loaded"),
        "load_ids": MetadataValue.json(load_ids),
        "skipped": MetadataValue.bool(False),
        "notes": MetadataValue.json(plan.report.notes),
    }


def load_summary(plan: LoadPlan) -> str:
    """One line of what a load did, table by table (also when it loaded nothing)."""
    parts = []
    for name in sorted(t.name for t in TABLES):
        m = plan.report.table(name).metadata()
        parts.append(
            f"{name}: {m['rows_loaded']} row(s) from {len(m['files_consumed'])} new file(s), "
            f"{m['files_unchanged']} unchanged, {len(m['files_rejected'])} rejected"
        )
    return "; ".join(parts)


# dlt's own entries that say nothing here: the dataset name is always empty (tables sit in
# the client's database itself), and its table name/schema/storage entries are replaced by
# ours, read from ClickHouse. Its job list is never shown: paths of dlt's load packages in
# the code location's working directory (files_consumed names what was loaded).
_DLT_EMPTY_WHEN = {"dataset_name"}
_DLT_NEVER = {"jobs"}


def _dlt_extras(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The dlt entries worth showing after ours (load times, first run, destination...)."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        raw = getattr(value, "value", value)
        if key.startswith("dagster/") or key == "rows_loaded" or key in _DLT_NEVER:
            continue
        if key in _DLT_EMPTY_WHEN and not raw:
            continue
        out[key] = value
    return out


def _skipped_metadata(client_id: str, skipped: Skipped) -> dict[str, Any]:
    return {
        "client_id": MetadataValue.text(client_id),
        "skipped": MetadataValue.bool(True),
        "skip_reason": MetadataValue.text(skipped.reason),
        "rows_loaded": MetadataValue.int(0),
    }


def build_batch_assets(working_dir: str) -> AssetsDefinition:
    """The dlt assets; `working_dir` holds dlt's local state (disposable: each run restores
    a client's state from its database)."""
    telemetry_off_by_default()
    # Declaration only: never loads.
    declaration = dlt_lib.pipeline(
        pipeline_name="batch_declaration",  # never a client name: those are batch_load__<id>
        destination=clickhouse_destination(),
        dataset_name="",
        pipelines_dir=working_dir,
    )

    @dlt_assets(
        dlt_source=landing_zone_source(None),
        dlt_pipeline=declaration,
        name="batch_loads",
        partitions_def=clients_partitions,
        dagster_dlt_translator=BatchLoadTranslator(),
    )
    def batch_loads(
        context: AssetExecutionContext,
        dlt: DagsterDltResource,
        postgres: PostgresMetadataResource,
        clickhouse: ClickHouseResource,
    ) -> Iterator[MaterializeResult]:
        client_id = client_of_run(context, "a batch load")
        gone = removed_partition(context, client_id)
        if gone is not None:
            # Nothing can be recorded for a removed partition: the run succeeds, loads and
            # records nothing, and says why.
            context.log.info(f"batch load skipped: {gone}")
            return
        with open_connections(postgres, clickhouse) as c:
            plan = plan_client_load(c, client_id, working_dir=working_dir)
        if isinstance(plan, Skipped):
            context.log.info(f"batch load skipped: {plan.reason}")
            for key in sorted(context.selected_asset_keys, key=lambda k: k.path):
                yield MaterializeResult(asset_key=key, metadata=_skipped_metadata(client_id, plan))
            return
        if isinstance(plan, Broken):
            raise Failure(description=plan.reason, metadata={"client_id": client_id})
        context.log.info(
            f"loading client {client_id} from {plan.source_url} into {plan.database} "
            f"(dlt pipeline {plan.pipeline.pipeline_name})"
        )
        results = list(dlt.run(context=context, dlt_source=plan.source, dlt_pipeline=plan.pipeline))
        trace = plan.pipeline.last_trace
        load_info = trace.last_load_info if trace is not None else None
        load_ids = list(load_info.loads_ids) if load_info is not None else []
        for rejected in plan.report.rejected:
            state = "still rejected" if rejected.known else "rejected"
            context.log.warning(f"client {client_id}: file {state}: {rejected.describe()}")
        context.log.info(f"client {client_id}: {load_summary(plan)}")
        with postgres.connect() as conn:
            write_file_log(
                conn, client_id, plan.report, load_ids[-1] if load_ids else None, context.run.run_id
            )
        with clickhouse.connect(clickhouse.targets()[plan.target]) as ch:
            for result in results:
                if not isinstance(result, MaterializeResult) or result.asset_key is None:
                    continue
                name = result.asset_key.path[-1]
                standard = read_table_metadata(ch, plan.database, name)
                yield MaterializeResult(
                    asset_key=result.asset_key,
                    metadata={
                        **_table_metadata(plan, plan.report.table(name), load_ids, standard),
                        **_dlt_extras(result.metadata or {}),
                    },
                )

    return batch_loads


BATCH_ASSET_KEYS = [batch_asset_key(t.name) for t in TABLES]
