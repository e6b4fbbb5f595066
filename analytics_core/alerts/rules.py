"""What deserves an alert, and the sensor cursor that keeps each one from repeating (pure).

Dedupe: every rule returns the state to store in its sensor's cursor. A stuck client is
alerted once per stuck episode (keyed by its `updated_at`); dead-letter growth is measured
against a baseline of end offsets that moves after an alert or after the window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from analytics_core.alerts.model import Alert, Severity

STUCK_STATUSES = ("pending", "failed")
CURSOR_VERSION = 1


def _link(base: str, path: str) -> str | None:
    return f"{base}{path}" if base else None


def run_failure_alert(
    *,
    job_name: str,
    run_id: str,
    message: str,
    partition: str | None = None,
    client_id: str | None = None,
    dagster_url: str = "",
    refused: bool = False,
) -> Alert:
    """A failed run is critical; a run that only refused what it was asked (a confirmation
    typo, a malformed id: every failed step says `refused`) is a warning."""
    who = client_id or partition
    subject = f"{job_name}" + (f" for {who}" if who else "")
    return Alert(
        kind="run_refused" if refused else "run_failure",
        severity=Severity.WARNING if refused else Severity.CRITICAL,
        title=f"Dagster run {'refused' if refused else 'failed'}: {subject}",
        text=message.strip()[:1500] or "the run failed",
        dedupe_key=f"run_failure:{run_id}",
        fields={
            "job": job_name,
            "run_id": run_id,
            "partition": partition,
            "client_id": client_id,
        },
        link=_link(dagster_url, f"/runs/{run_id}"),
    )


# Dagster's own errors for a per-client run launched without a client partition, or for a
# partition that does not exist (never added, or removed by a deprovisioning after the run
# was queued). Dagster raises them as the step starts, before any of its code runs.
_NO_PARTITION = "Cannot access partition_key for a non-partitioned run"
_NO_SUCH_PARTITION = "Nonexistent partition keys"


def launch_refusal(error: str, partition: str | None) -> str | None:
    """What was wrong with a run's launch, when a step failed with one of Dagster's
    partition errors (the run changed nothing); None for any other error."""
    if _NO_PARTITION in error:
        return (
            "the run was launched without a client: launch it for the client's partition "
            "(the launchpad's partition picker); nothing was done"
        )
    if _NO_SUCH_PARTITION in error:
        return (
            f"there is no client partition {partition!r} (never added, or removed by a "
            "deprovisioning after the run was queued); nothing was done"
        )
    return None


def check_failure_alert(
    *,
    asset_key: str,
    check_name: str,
    severity: str,
    description: str | None,
    run_id: str,
    partition: str | None,
    storage_id: int,
    dagster_url: str = "",
) -> Alert:
    where = f"{asset_key}" + (f" [{partition}]" if partition else "")
    return Alert(
        kind="asset_check_failed",
        severity=Severity.CRITICAL if severity.upper() == "ERROR" else Severity.WARNING,
        title=f"Asset check {check_name} failed on {where}",
        text=(description or "no description").strip()[:1500],
        dedupe_key=f"asset_check:{storage_id}",
        fields={
            "asset": asset_key,
            "check": check_name,
            "partition": partition,
            "severity": severity,
            "run_id": run_id,
        },
        link=_link(dagster_url, f"/runs/{run_id}"),
    )


@dataclass(frozen=True)
class ClientState:
    client_id: str
    status: str
    updated_at: datetime
    detail: str | None = None


def stuck_clients(
    clients: Sequence[ClientState],
    *,
    now: datetime,
    minutes: float,
    alerted: Mapping[str, str],
) -> tuple[list[Alert], dict[str, str]]:
    """Alerts for clients pending/failed for longer than `minutes`, once per episode.

    `alerted` (from the cursor) maps client id -> the `updated_at` already alerted; the
    returned map keeps only clients that are still stuck, so a client that recovers and
    gets stuck again is alerted again.
    """
    limit = timedelta(minutes=minutes)
    alerts: list[Alert] = []
    state: dict[str, str] = {}
    for c in clients:
        if c.status not in STUCK_STATUSES:
            continue
        age = now - c.updated_at
        if age < limit:
            continue
        stamp = c.updated_at.isoformat()
        state[c.client_id] = stamp
        if alerted.get(c.client_id) == stamp:
            continue
        mins = int(age.total_seconds() // 60)
        alerts.append(
            Alert(
                kind="client_stuck",
                severity=Severity.CRITICAL if c.status == "failed" else Severity.WARNING,
                title=f"Client {c.client_id} is {c.status} for {mins} min",
                text=(
                    f"client {c.client_id} has been {c.status} since {stamp}"
                    + (f": {c.detail}" if c.detail else "")
                ),
                dedupe_key=f"client_stuck:{c.client_id}:{stamp}",
                fields={"client_id": c.client_id, "status": c.status, "minutes": mins},
            )
        )
    return alerts, state


@dataclass(frozen=True)
class Baseline:
    """End offsets of the dead-letter topic at the start of the current window."""

    offsets: Mapping[int, int]
    since: datetime


@dataclass(frozen=True)
class Growth:
    new_letters: int
    alert: bool
    baseline: Baseline  # to store in the cursor
    window_start: datetime | None  # start of the measured window (None: first tick)


def dead_letter_growth(
    baseline: Baseline | None,
    end_offsets: Mapping[int, int],
    *,
    now: datetime,
    threshold: int,
    window_minutes: float,
) -> Growth:
    """Alert when `threshold` letters arrived since the baseline, within the window."""
    fresh = Baseline(dict(end_offsets), now)
    if baseline is None:
        return Growth(0, False, fresh, None)
    new = sum(max(0, end - baseline.offsets.get(p, 0)) for p, end in end_offsets.items())
    if new >= threshold:
        return Growth(new, True, fresh, baseline.since)
    if now - baseline.since >= timedelta(minutes=window_minutes):
        return Growth(new, False, fresh, baseline.since)
    return Growth(new, False, baseline, baseline.since)


def dead_letter_alert(
    growth: Growth,
    *,
    topic: str,
    threshold: int,
    by_reason: Mapping[str, int],
    by_client: Mapping[str, int],
    sampled: int,
) -> Alert:
    assert growth.window_start is not None
    minutes = max(1, int((growth.baseline.since - growth.window_start).total_seconds() // 60))
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(by_reason.items(), key=lambda x: -x[1]))
    clients = ", ".join(
        f"{c or '(none)'} {n}" for c, n in sorted(by_client.items(), key=lambda x: -x[1])[:10]
    )
    text = f"{growth.new_letters} new dead letter(s) on {topic} in {minutes} min"
    if reasons:
        text += f"; by reason (first {sampled}): {reasons}"
    if clients:
        text += f"; by client: {clients}"
    return Alert(
        kind="dead_letter_growth",
        severity=Severity.WARNING,
        title=f"Dead letters rising: {growth.new_letters} in {minutes} min (threshold {threshold})",
        text=text,
        dedupe_key=f"dead_letter_growth:{growth.baseline.since.isoformat()}",
        fields={"topic": topic, "new_dead_letters": growth.new_letters, "threshold": threshold},
    )


# ------------------------------------------------------------------ cursor state


def baseline_to_json(b: Baseline) -> dict[str, Any]:
    return {"offsets": {str(p): o for p, o in b.offsets.items()}, "since": b.since.isoformat()}


def baseline_from_json(doc: Any) -> Baseline | None:
    try:
        offsets = {int(p): int(o) for p, o in doc["offsets"].items()}
        since = datetime.fromisoformat(doc["since"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return Baseline(offsets, since if since.tzinfo else since.replace(tzinfo=UTC))
