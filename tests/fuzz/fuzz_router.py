"""Coverage-guided fuzzer (atheris/libFuzzer) of the router's pure path: one Kafka message's
value and headers -> `router.processing.process_message` -> encoded rows, and the same
message through the hot path (`router.poll`), which must give exactly the same fates.

Run by tests/fuzz/test_fuzz_router.py for a bounded time over the committed corpus in
tests/fixtures/fuzz/router/ (new inputs go to a temporary directory). By hand:

    .venv/bin/python tests/fuzz/fuzz_router.py -max_total_time=60 /tmp/corpus \\
        tests/fixtures/fuzz/router

Input layout (so corpus files stay readable): byte 0 = number of headers (mod 5); each
header = 1 byte picking its name, 1 byte length, that many bytes of value; the rest is the
message value. A finding is an exception, or a message that needs the `unprocessable`
last resort (the contract code should have classified it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the tests package

with atheris.instrument_imports(include=["analytics_core", "router"]):
    from analytics_core.clients import ClientFound, ClientMissing, ClientRecord, ClientStatus
    from analytics_core.dead_letter import REPLAY_FIELDS, REPLAY_SIGNATURE, ReplayKeys
    from analytics_core.event_contract import hash_api_key
    from router.decision import RawMessage
    from router.processing import MessageFates, ProcessingContext, process_message
    from router.rows import read_row
    from tests.unit.router_messages import assert_paths_agree

HEADER_NAMES = [*REPLAY_FIELDS, REPLAY_SIGNATURE, "replay-x", "traceparent", "content-type"]
KEYS = ReplayKeys(b"fuzz-replay-key-0123456789abcdefgh")
CTX = ProcessingContext("2026-11-27T10:00:00.000Z", "fuzz", KEYS)
RECORDS = {
    "acme": ClientRecord("acme", ClientStatus.ACTIVE, hash_api_key("k-acme"), "client_acme"),
    "idle": ClientRecord("idle", ClientStatus.PENDING, hash_api_key("k-idle"), "client_idle"),
}


def lookup(client_id: str) -> ClientFound | ClientMissing:
    record = RECORDS.get(client_id)
    return ClientFound(record) if record else ClientMissing(client_id)


def split(data: bytes) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    if not data:
        return data, []
    count, pos = data[0] % 5, 1
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        if pos + 2 > len(data):
            break
        name = HEADER_NAMES[data[pos] % len(HEADER_NAMES)]
        size = data[pos + 1] % 80
        raw = data[pos + 2 : pos + 2 + size]
        headers.append((name, raw if data[pos + 1] < 250 else None))
        pos += 2 + size
    return data[pos:], headers


def test_one_input(data: bytes) -> None:
    value, headers = split(data)
    out = process_message(RawMessage("raw", 1, 42, value, headers or None, 1_000), lookup, CTX, 1)
    if not isinstance(out, MessageFates):
        raise AssertionError(f"a Retry without any outage: {out}")
    if out.unprocessable is not None:
        raise out.unprocessable  # fell through to the last resort: a finding
    if out.events < 1:
        raise AssertionError("a message without a fate")
    for routed in out.rows:
        if routed.database != "client_acme":
            raise AssertionError(f"routed to {routed.database}")
        read_row(routed.row.line)  # reads back whole: every column, nothing after
    assert_paths_agree(value, headers or None)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
