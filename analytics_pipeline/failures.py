"""Failing a Dagster step on purpose: a lifecycle `StepFailed`, or a refusal.

The lifecycle step has already recorded the failure (client status, audit row); this only
fails the run with the reason. Op retry policies retry transient failures (ClickHouse outages)
and never deterministic ones (invalid id, refused migration plan, confirmation mismatch).

A refusal (the request itself was wrong; nothing changed) is a `Failure` whose metadata says
`refused: true`: the UI shows its description, the run-failure alert is a warning, not a
critical alert, and it is never retried.
"""

from __future__ import annotations

from dagster import Backoff, Failure, RetryPolicy

from analytics_core.lifecycle import StepFailed

REFUSED = "refused"  # failure metadata key: True when the step refused and changed nothing

# Up to 3 attempts in all: 10 s, then 20 s between them.
TRANSIENT_RETRY = RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL)


def step_failure(outcome: StepFailed, step: str) -> Failure:
    kind = "refused" if outcome.refused else "failed"
    # An empty client id means the request named no client: say so, not "client ''".
    who = (
        f"{step} of client {outcome.client_id!r}"
        if outcome.client_id
        else f"{step} (no client given)"
    )
    return Failure(
        description=f"{who} {kind}: {outcome.reason}",
        metadata={
            "client_id": outcome.client_id,
            "reason": outcome.reason,
            REFUSED: outcome.refused,
            "transient": outcome.transient,
        },
        allow_retries=outcome.transient,
    )


# A refusal repeats what it was given (a bad id, a typo'd confirmation): within these
# bounds, so a 20 000-character config value does not become a 40 000-character step error,
# alert and webhook body.
MAX_DESCRIPTION = 1000
MAX_METADATA_TEXT = 200


def clipped(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters in all)"


def refusal(description: str, **metadata: str) -> Failure:
    """A request refused before anything changed (bad run config, no partition)."""
    return Failure(
        description=clipped(description, MAX_DESCRIPTION),
        metadata={
            **{
                k: clipped(v, MAX_METADATA_TEXT) if isinstance(v, str) else v
                for k, v in metadata.items()
            },
            REFUSED: True,
        },
        allow_retries=False,
    )
