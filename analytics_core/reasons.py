"""The closed set of dead-letter reason codes, and which of them may heal.

Adding a reason is a contract change: document it in README's dead-letter
section and bump `analytics_core.dead_letter.ENVELOPE_VERSION` if its
meaning for readers changes.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_ENCODING = "invalid_encoding"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_CLIENT = "unknown_client"
    INVALID_API_KEY = "invalid_api_key"
    CLIENT_INACTIVE = "client_inactive"
    DESTINATION_ERROR = "destination_error"
    INVALID_REPLAY = "invalid_replay"
    INVALID_HEADERS = "invalid_headers"
    UNPROCESSABLE = "unprocessable"


DESCRIPTIONS: dict[Reason, str] = {
    Reason.INVALID_JSON: "The message is empty or not JSON.",
    Reason.INVALID_ENCODING: "The message bytes are not valid UTF-8.",
    Reason.PAYLOAD_TOO_LARGE: "The message exceeds 512 KiB or a batch exceeds 500 events.",
    Reason.SCHEMA_VIOLATION: "The JSON does not follow event contract v1 (detail names the field).",
    Reason.UNKNOWN_CLIENT: "No client with this client_id exists in the registry.",
    Reason.INVALID_API_KEY: "The credential does not match the client's api_key_hash.",
    Reason.CLIENT_INACTIVE: (
        "The client exists but is not active (pending, failed, deprovisioned...)."
    ),
    Reason.DESTINATION_ERROR: (
        "The client's ClickHouse database refused the rows after all retries."
    ),
    Reason.INVALID_REPLAY: (
        "The message carries replay-* headers the reprocessing job did not sign (forged, "
        "incomplete or malformed); the whole message is dead-lettered, never routed."
    ),
    Reason.INVALID_HEADERS: (
        "The message's Kafka headers can not be read (a header name that is not UTF-8), so "
        "whether it claims a replay can not be told; the whole message is dead-lettered, "
        "never routed."
    ),
    Reason.UNPROCESSABLE: (
        "Processing this one message failed in a way that is not an outage (a bug or an "
        "input nothing else catches); the detail names the error class."
    ),
}

# May succeed later without changing the bytes: the client gets provisioned or
# re-activated, or its database is repaired. The reprocessing job re-submits these.
RECOVERABLE: frozenset[Reason] = frozenset(
    {Reason.UNKNOWN_CLIENT, Reason.CLIENT_INACTIVE, Reason.DESTINATION_ERROR}
)
