"""Alerting sensors: run failures, failed asset checks, stuck clients, dead-letter growth.

What to say is decided by `analytics_core.alerts.rules` (pure); where it goes by
`analytics_core.alerts.sinks` (log, stdout, webhook), configured by the `alerts` resource
(ALERT_* variables, see analytics_core/alerts/__init__.py). Each sensor dedupes with its
cursor:

- `alert_on_run_failure` (run_failure_sensor, every code location): Dagster's own cursor
  reports each failed run once. A run whose failed steps all refused what they were asked
  (`refused` failure metadata: a confirmation typo, a malformed id) is a warning, not a
  critical alert, and says what was refused; so is a run Dagster failed as it started for
  want of its client's partition (launched without one, or for one that does not exist).
  A webhook that does not accept the alert fails the tick
  (visible in the UI); the log sink has it anyway.
- `alert_on_failed_asset_checks`: the event-log storage id of the last evaluation handled.
  The first tick only sets the cursor (no flood of old failures). A webhook failure keeps
  the cursor before that evaluation, so the alert is retried on the next tick.
- `alert_on_stuck_clients`: clients pending or failed for ALERT_STUCK_CLIENT_MINUTES, once
  per episode (the cursor holds each stuck client's updated_at).
- `alert_on_dead_letter_growth`: ALERT_DEAD_LETTER_THRESHOLD new letters on the
  dead-letter topic within ALERT_DEAD_LETTER_WINDOW_MINUTES, measured from a baseline of
  end offsets kept in the cursor; the alert names the top reasons and clients.
"""

# No `from __future__ import annotations`: Dagster reads these type hints at runtime.

from collections.abc import Sequence
from datetime import UTC, datetime

from dagster import (
    DagsterEventType,
    DefaultSensorStatus,
    EventRecordsFilter,
    RunFailureSensorContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation
from dagster._core.execution.plan.objects import StepFailureData

from analytics_core import registry
from analytics_core.alerts import kafka_io
from analytics_core.alerts.rules import (
    ClientState,
    baseline_from_json,
    baseline_to_json,
    check_failure_alert,
    dead_letter_alert,
    dead_letter_growth,
    launch_refusal,
    run_failure_alert,
    stuck_clients,
)
from analytics_core.alerts.sinks import Outcome
from analytics_core.clients import ClientStatus
from analytics_pipeline.defs.alerts.resources import AlertsResource
from analytics_pipeline.failures import REFUSED
from analytics_pipeline.resources import KafkaResource, PostgresMetadataResource
from analytics_pipeline.sensor_cursor import decode as decode_cursor
from analytics_pipeline.sensor_cursor import encode as encode_cursor
from analytics_pipeline.tags import CLIENT_TAG, PARTITION_TAG

CHECK_BATCH = 200


class AlertNotDelivered(RuntimeError):
    """A sink refused an alert; raised so the sensor tick shows the failure."""


def _failures(outcomes: Sequence[Outcome]) -> str:
    return "; ".join(f"{f.sink}: {f.reason}" for o in outcomes for f in o.failures)


@run_failure_sensor(
    name="alert_on_run_failure",
    monitor_all_code_locations=True,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Alerts (log / webhook) once per failed run, with its step errors.",
)
def alert_on_run_failure(context: RunFailureSensorContext, alerts: AlertsResource) -> None:
    run = context.dagster_run
    errors = []
    refusals = []
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        if data is None:
            continue
        text, refused = step_failure(event.step_key or "", data, run.tags.get(PARTITION_TAG))
        refusals.append(refused)
        if text:
            errors.append(text)
    message = "\n".join(errors) or (context.failure_event.message or "")
    alert = run_failure_alert(
        job_name=run.job_name,
        run_id=run.run_id,
        message=message,
        partition=run.tags.get(PARTITION_TAG),
        client_id=run.tags.get(CLIENT_TAG),
        dagster_url=alerts.settings().dagster_url,
        refused=bool(refusals) and all(refusals),
    )
    outcomes = alerts.send([alert], context.log)
    failed = _failures(outcomes)
    if failed:
        raise AlertNotDelivered(f"run {run.run_id} failure alert not delivered: {failed}")


def step_failure(step: str, data: StepFailureData, partition: str | None) -> tuple[str, bool]:
    """What a failed step says in its run's alert, and whether it only refused: it raised a
    refusal (`Failure` with `refused`), or Dagster failed it as it started for want of its
    client's partition (nothing of it ran)."""
    launch = None if data.error is None else launch_refusal(data.error.message, partition)
    refused = _is_refusal(data) or launch is not None
    if data.user_failure_data is not None and data.user_failure_data.description:
        return f"{step}: {data.user_failure_data.description.strip()}", refused
    if launch is not None:
        return f"{step}: refused: {launch}", refused
    if data.error is not None:
        return f"{step}: {data.error.message.strip()}", refused
    return "", refused


def _is_refusal(data: StepFailureData) -> bool:
    """A step that failed with `Failure(metadata={"refused": True})` (analytics_pipeline.failures):
    it refused what it was asked and changed nothing."""
    user = data.user_failure_data
    if user is None:
        return False
    flag = user.metadata.get(REFUSED)
    return bool(getattr(flag, "value", flag))


def _evaluation(entry: object) -> AssetCheckEvaluation | None:
    event = getattr(entry, "dagster_event", None)
    data = getattr(event, "event_specific_data", None)
    return data if isinstance(data, AssetCheckEvaluation) else None


@sensor(
    name="alert_on_failed_asset_checks",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Alerts once per failed asset check evaluation (e.g. reconciliation).",
)
def alert_on_failed_asset_checks(
    context: SensorEvaluationContext, alerts: AlertsResource
) -> SensorResult:
    storage = context.instance.event_log_storage
    after = decode_cursor(context.cursor).get("after")
    if not isinstance(after, int):
        latest = storage.get_event_records(
            EventRecordsFilter(DagsterEventType.ASSET_CHECK_EVALUATION), limit=1, ascending=False
        )
        start = latest[0].storage_id if latest else 0
        return SensorResult(
            cursor=encode_cursor({"after": start}),
            skip_reason=SkipReason(f"started: alerting on evaluations after event {start}"),
        )
    records = storage.get_event_records(
        EventRecordsFilter(DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after),
        limit=CHECK_BATCH,
        ascending=True,
    )
    dagster_url = alerts.settings().dagster_url
    position = after
    sent = 0
    for record in records:
        evaluation = _evaluation(record.event_log_entry)
        if evaluation is not None and not evaluation.passed:
            alert = check_failure_alert(
                asset_key=evaluation.asset_key.to_user_string(),
                check_name=evaluation.check_name,
                severity=evaluation.severity.value,
                description=evaluation.description,
                run_id=record.event_log_entry.run_id,
                partition=evaluation.partition,
                storage_id=record.storage_id,
                dagster_url=dagster_url,
            )
            failed = _failures(alerts.send([alert], context.log))
            if failed:
                return SensorResult(
                    cursor=encode_cursor({"after": position}),
                    skip_reason=SkipReason(f"alert not delivered, retried next tick: {failed}"),
                )
            sent += 1
        position = record.storage_id
    return SensorResult(
        cursor=encode_cursor({"after": position}),
        skip_reason=SkipReason(
            f"sent {sent} alert(s) for failed asset checks" if sent else "no failed asset check"
        ),
    )


@sensor(
    name="alert_on_stuck_clients",
    minimum_interval_seconds=120,
    default_status=DefaultSensorStatus.RUNNING,
    description="Alerts once per client that stays pending or failed too long.",
)
def alert_on_stuck_clients(
    context: SensorEvaluationContext, postgres: PostgresMetadataResource, alerts: AlertsResource
) -> SensorResult:
    settings = alerts.settings()
    with postgres.connect() as conn:
        rows = registry.list_clients(conn, [ClientStatus.PENDING, ClientStatus.FAILED])
    clients = [
        ClientState(
            r.client_id,
            r.status,
            r.updated_at if r.updated_at.tzinfo else r.updated_at.replace(tzinfo=UTC),
            r.status_detail,
        )
        for r in rows
    ]
    alerted = decode_cursor(context.cursor).get("clients", {})
    found, state = stuck_clients(
        clients,
        now=datetime.now(UTC),
        minutes=settings.stuck_client_minutes,
        alerted=alerted if isinstance(alerted, dict) else {},
    )
    outcomes = alerts.send(found, context.log)
    for outcome in outcomes:
        if outcome.failures:  # not recorded as alerted: retried next tick
            client = str(outcome.alert.fields.get("client_id"))
            if client in alerted:
                state[client] = alerted[client]
            else:
                state.pop(client, None)
    failed = _failures(outcomes)
    return SensorResult(
        cursor=encode_cursor({"clients": state}),
        skip_reason=(
            SkipReason(f"alert(s) not delivered: {failed}")
            if failed
            else SkipReason(f"sent {len(found)} alert(s) for stuck clients")
            if found
            else SkipReason(f"{len(state)} stuck client(s), all already alerted")
        ),
    )


@sensor(
    name="alert_on_dead_letter_growth",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Alerts when dead letters grow past a threshold within a time window.",
)
def alert_on_dead_letter_growth(
    context: SensorEvaluationContext, kafka: KafkaResource, alerts: AlertsResource
) -> SensorResult:
    settings = alerts.settings()
    ks = kafka.settings()
    ends = kafka_io.end_offsets(ks)
    baseline = baseline_from_json(decode_cursor(context.cursor).get("baseline"))
    growth = dead_letter_growth(
        baseline,
        ends,
        now=datetime.now(UTC),
        threshold=settings.dead_letter_threshold,
        window_minutes=settings.dead_letter_window_minutes,
    )
    if not growth.alert:
        return SensorResult(
            cursor=encode_cursor({"baseline": baseline_to_json(growth.baseline)}),
            skip_reason=SkipReason(
                f"{growth.new_letters} new dead letter(s); threshold "
                f"{settings.dead_letter_threshold}"
            ),
        )
    assert baseline is not None
    seen = kafka_io.breakdown(ks, baseline.offsets, ends)
    alert = dead_letter_alert(
        growth,
        topic=ks.dead_letter_topic,
        threshold=settings.dead_letter_threshold,
        by_reason=seen.by_reason,
        by_client=seen.by_client,
        sampled=seen.read,
    )
    failed = _failures(alerts.send([alert], context.log))
    if failed:  # keep the old baseline: the same growth alerts again next tick
        return SensorResult(
            cursor=encode_cursor({"baseline": baseline_to_json(baseline)}),
            skip_reason=SkipReason(f"alert not delivered, retried next tick: {failed}"),
        )
    # No run is requested, so Dagster lists the tick as skipped: its text says what was sent.
    return SensorResult(
        cursor=encode_cursor({"baseline": baseline_to_json(growth.baseline)}),
        skip_reason=SkipReason(f"sent an alert: {growth.new_letters} new dead letter(s)"),
    )


ALERT_SENSORS = [
    alert_on_run_failure,
    alert_on_failed_asset_checks,
    alert_on_stuck_clients,
    alert_on_dead_letter_growth,
]
