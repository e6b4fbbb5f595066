"""`trace_event`: trace one event from the Dagster UI (run config: event_id, client_id).

The op runs `analytics_core.trace.run.trace_event` (the code behind
`python -m analytics_core.trace`), logs the human-readable report and attaches it as output
metadata (status, counts, the text report, the JSON report). An event that is not found is a
successful run whose metadata says so; a malformed id or an unknown client is a refusal: the
run fails with the reason (a warning alert, not a critical one). Not found while a ClickHouse
target could not be searched is no verdict: the run fails (a critical alert) naming the target.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import Failure, MetadataValue, OpExecutionContext, Output, job, op
from pydantic import Field

from analytics_core.trace.model import TraceError, TraceReport
from analytics_core.trace.render import text
from analytics_core.trace.run import DEFAULT_MAX_MESSAGES, TraceOptions, trace_event
from analytics_pipeline.failures import refusal
from analytics_pipeline.resources import (
    ClickHouseResource,
    KafkaResource,
    PostgresMetadataResource,
    open_connections,
)
from analytics_pipeline.run_config import RefusingConfig


class TraceEventConfig(RefusingConfig):
    event_id: str = Field(description="The event id (UUID) to trace.")
    client_id: str | None = Field(
        default=None, description="Search only this client's database (default: every client)."
    )
    since_hours: float = Field(
        default=168.0,
        gt=0,
        le=24 * 365 * 100,
        description="Dead letters produced in the last N hours (default 7d).",
    )
    max_messages: int = Field(
        default=DEFAULT_MAX_MESSAGES, ge=1, description="Bound of the dead-letter scan."
    )


def _dagster_text(report: TraceReport, since_hours: float) -> str:
    """The report as text, naming the run config's bound instead of the CLI flag."""
    return text(report, f"since_hours (now {since_hours:g}: raise it to look further back)")


@op(description="Report every place an event is or was (rows, Kafka, dead letters, parked).")
def trace_event_op(
    context: OpExecutionContext,
    config: TraceEventConfig,
    postgres: PostgresMetadataResource,
    clickhouse: ClickHouseResource,
    kafka: KafkaResource,
) -> Output[dict[str, Any]]:
    since = datetime.now(UTC) - timedelta(hours=config.since_hours)
    with open_connections(postgres, clickhouse, kafka=kafka) as c:
        report = trace_event(
            c,
            config.event_id,
            config.client_id,
            TraceOptions(since=since, max_messages=config.max_messages),
        )
    if isinstance(report, TraceError):
        raise refusal(
            f"can not trace {report.event_id!r}: {report.reason}",
            event_id=report.event_id,
            reason=report.reason,
        )
    rendered = _dagster_text(report, config.since_hours)
    context.log.info(rendered)
    if not report.conclusive:
        raise Failure(
            description=(
                f"event {report.event_id} not found, but ClickHouse target(s) "
                f"{', '.join(report.unsearched_targets)} could not be searched: no verdict"
            ),
            metadata={"report": MetadataValue.md("```\n" + rendered + "\n```")},
        )
    doc = report.to_dict()
    return Output(
        doc,
        metadata={
            "event_id": MetadataValue.text(report.event_id),
            "status": MetadataValue.text(report.status),
            "found": MetadataValue.bool(report.found),
            "rows": MetadataValue.int(len(report.rows)),
            "dead_letters": MetadataValue.int(len(report.letters)),
            "reprocessing_records": MetadataValue.int(len(report.fates)),
            "report": MetadataValue.md("```\n" + rendered + "\n```"),
            "report_json": MetadataValue.json(doc),
        },
    )


@job(
    name="trace_event",
    description="Trace one event: set ops.trace_event_op.config.event_id (and client_id).",
    tags={"analytics/kind": "trace"},
)
def trace_event_job() -> None:
    trace_event_op()
