"""`dead_letters/reprocessing`: one pass over `shared_dead_letter` (replay, park or defer).

Materializing it runs `analytics_core.dlq.reprocess` once: deferred records first, then the
topic from the consumer group's committed offsets to the end offsets seen at the start.
Run config limits a run to one client and/or one reason (records outside the filter stay
for a later unfiltered run; see analytics_core/dlq/__init__.py). Metadata: counts by
reason and outcome, by outcome, by origin (topic or deferred table), records read, replays
sent, offsets committed. Outages (Kafka, PostgreSQL) fail the run after retries; nothing is
committed past a record whose fate is not durable, so the next run picks it up.

Resource keys: `postgres`, `kafka`.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from dataclasses import replace
from datetime import timedelta

from dagster import (
    AssetExecutionContext,
    Backoff,
    Failure,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from pydantic import Field

from analytics_core.dlq.classify import DEFAULT_MAX_ATTEMPTS, Policy, Selection
from analytics_core.dlq.kafka_io import DEFAULT_GROUP
from analytics_core.dlq.reprocess import ReprocessOptions, ReprocessReport, reprocess
from analytics_core.naming import client_id_problem
from analytics_core.reasons import Reason
from analytics_pipeline.failures import refusal
from analytics_pipeline.resources import KafkaResource, PostgresMetadataResource, process_settings
from analytics_pipeline.run_config import RefusingConfig

DEAD_LETTER_GROUP = "dead_letters"


class DeadLetterReprocessingConfig(RefusingConfig):
    client_id: str | None = Field(
        default=None, description="Only this client's dead letters (others stay for later)."
    )
    reason: str | None = Field(
        default=None,
        description="Only this reason: " + ", ".join(r.value for r in Reason),
    )
    max_attempts: int = Field(
        default=DEFAULT_MAX_ATTEMPTS,
        ge=1,
        description="A letter that failed this many times is parked instead of replayed.",
    )
    max_wait_days: float = Field(
        default=7.0,
        gt=0,
        le=36_500,
        description="Deferred letters older than this are parked.",
    )
    max_records: int = Field(default=1_000_000, ge=1, description="Upper bound per run.")
    consumer_group: str = Field(
        default=DEFAULT_GROUP,
        min_length=1,
        max_length=255,
        pattern=r"^\S+$",
        description="Kafka consumer group of the reprocessing (no spaces).",
    )


def options_from(config: DeadLetterReprocessingConfig) -> ReprocessOptions:
    """Validated options; a bad value is a refusal (never retried) before anything is read."""
    problem = None if config.client_id is None else client_id_problem(config.client_id)
    if problem is not None:
        raise refusal(f"run config client_id {config.client_id!r}: {problem}", field="client_id")
    reason = None
    if config.reason is not None:
        try:
            reason = Reason(config.reason)
        except ValueError:
            known = ", ".join(r.value for r in Reason)
            raise refusal(
                f"run config reason {config.reason!r} is not one of: {known}", field="reason"
            ) from None
    return ReprocessOptions(
        selection=Selection(config.client_id, reason),
        policy=Policy(config.max_attempts, timedelta(days=config.max_wait_days)),
        group_id=config.consumer_group,
        max_records=config.max_records,
    )


def report_metadata(report: ReprocessReport) -> dict[str, MetadataValue]:
    tally = report.tally
    by_outcome = tally.by_outcome()
    return {
        "selection": MetadataValue.text(report.selection.describe()),
        "consumer_group": MetadataValue.text(report.group_id),
        "records_read": MetadataValue.int(report.read),
        "replays_sent": MetadataValue.int(report.replays_sent),
        **{outcome: MetadataValue.int(n) for outcome, n in by_outcome.items()},
        "counts": MetadataValue.md(tally.markdown()),
        "by_reason_and_outcome": MetadataValue.json(tally.by_reason_and_outcome()),
        "by_origin": MetadataValue.json(tally.by_origin()),
        "backlog_at_start": MetadataValue.json(
            {str(p): n for p, n in report.backlog_at_start.items()}
        ),
        "committed_offsets": MetadataValue.json({str(p): o for p, o in report.committed.items()}),
    }


@asset(
    key=["dead_letters", "reprocessing"],
    group_name=DEAD_LETTER_GROUP,
    kinds={"kafka", "postgres"},
    retry_policy=RetryPolicy(max_retries=2, delay=30, backoff=Backoff.EXPONENTIAL),
    description=(
        "One pass over shared_dead_letter: recoverable letters of active clients are replayed "
        "to shared_raw_events, permanent ones parked in PostgreSQL parked_dead_letters, those "
        "waiting for a client kept in deferred_dead_letters."
    ),
)
def dead_letter_reprocessing(
    context: AssetExecutionContext,
    config: DeadLetterReprocessingConfig,
    postgres: PostgresMetadataResource,
    kafka: KafkaResource,
) -> MaterializeResult:
    options = options_from(config)
    # `reprocess` (analytics_core.dlq) still opens its own connections from settings: the
    # resources' values over the settings this process read once.
    settings = replace(process_settings(), postgres=postgres.settings(), kafka=kafka.settings())
    report = reprocess(settings, options, run_id=context.run.run_id)
    if report.busy:
        raise Failure(
            description=f"another reprocessing run of consumer group {options.group_id} is "
            "in progress; nothing was read",
            allow_retries=True,
        )
    counts = report.tally.by_outcome()
    context.log.info(
        f"dead letters ({options.selection.describe()}): read {report.read}, "
        + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    )
    return MaterializeResult(metadata=report_metadata(report))


DEAD_LETTER_ASSETS = [dead_letter_reprocessing]
