"""One client's batch load: plan it from the registry row, run it, summarise it.

`plan_client_load` is where "only active clients load" is decided: a client that is not
active, has no batch source, or does not exist yields `Skipped` with a sentence saying
why (an expected case, not an error). An active client whose database is missing is
`Broken` (an operator must look). The Dagster asset runs the plan through dagster-dlt;
`run_plan` runs it directly (CLI, benchmark) with the same semantics.
"""

from __future__ import annotations

from dataclasses import dataclass

import dlt
from dlt.common.pipeline import LoadInfo
from dlt.extract.source import DltSource

from analytics_core import registry
from analytics_core.batch.landing_zone import LandingZone
from analytics_core.batch.pipeline import client_pipeline
from analytics_core.batch.report import LoadReport
from analytics_core.batch.source import landing_zone_source
from analytics_core.clickhouse import database_exists
from analytics_core.clients import ClientStatus
from analytics_core.connections import Connections, UnknownTarget
from analytics_core.lifecycle import busy_reason
from analytics_core.naming import InvalidIdentifier, client_id_problem, validate_identifier


@dataclass(frozen=True)
class Skipped:
    client_id: str
    reason: str


@dataclass(frozen=True)
class Broken:
    client_id: str
    reason: str


@dataclass
class LoadPlan:
    client_id: str
    database: str
    source_url: str
    zone: LandingZone
    pipeline: dlt.Pipeline
    source: DltSource
    report: LoadReport
    target: str = "default"  # the ClickHouse target holding the database


@dataclass(frozen=True)
class LoadSummary:
    client_id: str
    database: str
    load_ids: list[str]
    report: LoadReport


def plan_client_load(
    c: Connections, client_id: str, *, working_dir: str
) -> LoadPlan | Skipped | Broken:
    """The client's load, or why it does not load. dlt writes to the client's database on
    its ClickHouse target (`clients.ch_target`); `working_dir` holds dlt's local state. A
    client in the middle of a move is skipped (its batch tables are being copied)."""
    problem = client_id_problem(client_id)
    if problem is not None:
        return Skipped(str(client_id), problem)
    row = registry.get_client(c.registry, client_id)
    if row is None:
        return Skipped(client_id, f"client {client_id} is not in the registry; nothing to load")
    if row.status != ClientStatus.ACTIVE:
        return Skipped(
            client_id, f"client {client_id} is {row.status}; only active clients load batch data"
        )
    if not row.batch_source_url:
        return Skipped(
            client_id,
            f"client {client_id} has no batch source (clients.batch_source_url is empty); "
            "seed one with `python -m analytics_core.batch.seed_sample`",
        )
    try:
        database = validate_identifier(row.ch_database_name)
    except InvalidIdentifier as exc:
        return Broken(client_id, f"client {client_id} is active but ch_database_name: {exc}")
    moving = busy_reason(c.registry, client_id)
    if moving is not None:
        return Skipped(client_id, f"{moving}; batch loads resume once it is done")
    try:
        destination = c.target(row.ch_target)
    except UnknownTarget as exc:
        return Broken(client_id, f"client {client_id}: {exc}")
    if not database_exists(c.clickhouse_for(destination.target), database):
        return Broken(
            client_id,
            f"client {client_id} is active but its database {database} is missing on "
            f"ClickHouse target {destination.target}",
        )
    zone = LandingZone(row.batch_source_url)
    report = LoadReport()
    if not zone.exists():
        report.notes.append(f"landing zone {row.batch_source_url} does not exist (yet)")
    return LoadPlan(
        client_id=client_id,
        database=database,
        source_url=row.batch_source_url,
        zone=zone,
        pipeline=client_pipeline(destination, working_dir, client_id, database),
        source=landing_zone_source(zone, report),
        report=report,
        target=destination.target,
    )


def run_plan(plan: LoadPlan) -> LoadSummary:
    """Run without Dagster, like DagsterDltResource: fresh local state, restored from the
    destination, then one load; raises when a load job failed."""
    plan.pipeline.drop()
    info = plan.pipeline.run(plan.source)
    info.raise_on_failed_jobs()
    return summarize(plan, info)


def summarize(plan: LoadPlan, info: LoadInfo | None) -> LoadSummary:
    load_ids = list(info.loads_ids) if info is not None else []
    return LoadSummary(plan.client_id, plan.database, load_ids, plan.report)
