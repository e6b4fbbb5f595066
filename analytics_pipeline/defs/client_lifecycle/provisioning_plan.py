"""Which pending clients get a provisioning run this tick (pure; the sensor does the I/O).

Invariants:
- one run key per client and attempt: `provision:<client>:<stamp>:<attempt>`, where the stamp
  is the client's `updated_at`, so a client sent back to pending gets a new attempt 1;
- a key is requested once; while a run with that key exists and is not finished (or has
  not been created yet) the client is not requested again;
- a client still pending after its run finished (a crash that never reached the lifecycle
  step, which would have set active or failed) is requested again, at most MAX_ATTEMPTS times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class PendingClient:
    client_id: str
    stamp: str


@dataclass(frozen=True)
class Attempt:
    stamp: str
    number: int

    def run_key(self, client_id: str) -> str:
        return f"provision:{client_id}:{self.stamp}:{self.number}"


def attempts_from_cursor(body: Mapping[str, Any]) -> dict[str, Attempt]:
    out: dict[str, Attempt] = {}
    for client_id, value in body.items():
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
            out[client_id] = Attempt(str(value[0]), value[1])
    return out


def attempts_to_cursor(attempts: Mapping[str, Attempt]) -> dict[str, Any]:
    return {c: [a.stamp, a.number] for c, a in sorted(attempts.items())}


def plan_provisioning(
    pending: Sequence[PendingClient],
    previous: Mapping[str, Attempt],
    key_state: Callable[[str], str],
) -> tuple[list[tuple[str, Attempt]], dict[str, Attempt]]:
    """(clients to request with their attempt, the next cursor state).

    `key_state(run_key)` is 'none', 'in_flight' or 'finished' (see run_history.run_key_state).
    The next state keeps only clients that are still pending.
    """
    requests: list[tuple[str, Attempt]] = []
    state: dict[str, Attempt] = {}
    for client in pending:
        prev = previous.get(client.client_id)
        if prev is None or prev.stamp != client.stamp:
            attempt = Attempt(client.stamp, 1)
        elif prev.number >= MAX_ATTEMPTS or key_state(prev.run_key(client.client_id)) != "finished":
            state[client.client_id] = prev
            continue
        else:
            attempt = Attempt(client.stamp, prev.number + 1)
        state[client.client_id] = attempt
        requests.append((client.client_id, attempt))
    return requests, state


IN_FLIGHT = "its run is queued or running"


def why_waiting(
    pending: Sequence[PendingClient],
    state: Mapping[str, Attempt],
    requested: Sequence[str],
    key_state: Callable[[str], str],
) -> dict[str, str]:
    """Why each pending client that was not requested this tick waits."""
    asked = set(requested)
    out: dict[str, str] = {}
    for client in pending:
        attempt = state.get(client.client_id)
        if client.client_id in asked or attempt is None:
            continue
        if key_state(attempt.run_key(client.client_id)) == "finished":
            out[client.client_id] = (
                f"its {attempt.number} attempt(s) are used up (see its last provision_client "
                "run; set it back to pending to try again)"
            )
        else:
            out[client.client_id] = IN_FLIGHT
    return out
