"""Property-based tests of the router's pure path: for ANY bytes and ANY headers, one
message gives an outcome (rows and/or dead letters), never an exception, the rows it
encodes are valid RowBinary rows of every column with the producer's properties text
unchanged, and the hot path (router.poll) gives it exactly the same fates."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from analytics_core.clients import ClientFound, ClientMissing, ClientRecord, ClientStatus
from analytics_core.dead_letter import REPLAY_FIELDS, REPLAY_SIGNATURE, ReplayKeys
from analytics_core.event_contract import hash_api_key
from router.buffers import RowBlock
from router.decision import RawMessage
from router.processing import MessageFates, ProcessingContext, process_message
from router.rows import read_row
from tests.unit.router_messages import assert_paths_agree

# Hypothesis keeps caches in ./.hypothesis by default: not in the work tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "analytics-pipeline-hypothesis")
KEYS = ReplayKeys(b"property-test-replay-key-0123456789")
CTX = ProcessingContext("2026-11-27T10:00:00.000Z", "test", KEYS)
RECORDS = {
    "acme": ClientRecord("acme", ClientStatus.ACTIVE, hash_api_key("k-acme"), "client_acme"),
    "idle": ClientRecord("idle", ClientStatus.PENDING, hash_api_key("k-idle"), "client_idle"),
}
PROFILE = settings(
    max_examples=200,
    deadline=None,
    database=None,  # nothing written into the work tree
    suppress_health_check=[HealthCheck.too_slow],
)


def lookup(client_id: str) -> ClientFound | ClientMissing:
    record = RECORDS.get(client_id)
    return ClientFound(record) if record else ClientMissing(client_id)


header_names = st.sampled_from(
    [*REPLAY_FIELDS, REPLAY_SIGNATURE, "replay-other", "traceparent", "x"]
) | st.text(max_size=20)
headers = st.none() | st.lists(
    st.tuples(header_names, st.none() | st.binary(max_size=40)), max_size=10
)
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
field_value = st.one_of(
    json_value,
    st.sampled_from(["acme", "idle", "ghost", "k-acme", "k-idle", "Bad Id", ""]),
    st.integers(min_value=0, max_value=10_413_791_999_999),
    st.sampled_from(["2026-11-27T10:00:00Z", "2026-11-27T10:00:00", "x", "\u0660" * 64]),
    st.uuids().map(str),
)
base_event = {
    "client_id": "acme",
    "api_key": "k-acme",
    "event_name": "e",
    "timestamp": 1795771200000,
    "user_id": "u",
    "properties": {"url": "/"},
}
event_docs = st.dictionaries(
    st.sampled_from(
        [
            "client_id",
            "api_key",
            "api_key_hash",
            "event_id",
            "event_name",
            "event_type",
            "timestamp",
            "sent_at",
            "user_id",
            "anonymous_id",
            "properties",
            "extra",
        ]
    ),
    field_value,
    max_size=6,
).map(lambda changes: {**base_event, **changes})


def run(value: bytes | None, hdrs: list[tuple[str, bytes | None]] | None) -> MessageFates:
    out = process_message(RawMessage("raw", 1, 42, value, hdrs, 1_000), lookup, CTX, 1)
    assert isinstance(out, MessageFates)  # the lookup never fails here: never a Retry
    assert out.events >= 1 and out.unprocessable is None
    return out


def check_rows(fates: MessageFates) -> None:
    for routed in fates.rows:
        assert routed.database == "client_acme"  # only the authenticated tenant
        line = routed.row.line
        values = read_row(line)  # reads back whole: every column, nothing after
        assert (values.partition, values.offset, values.topic) == (1, 42, "raw")
        block = RowBlock("client_acme", "acme")
        block.add(line, 1, 42, values.batch_index, 0, None)
        assert block.data() == line


def _message(doc: dict[str, Any], batch: bool) -> tuple[bytes, bytes]:
    """(message value, properties text): the stdlib encoder writes big integers too, and
    spaces orjson would not write."""
    props = json.dumps(doc.get("properties"), indent=1).encode()
    raw = json.dumps({k: v for k, v in doc.items() if k != "properties"}).encode()
    if "properties" in doc:
        raw = raw[:-1] + (b',"properties":' if len(raw) > 2 else b'"properties":') + props + b"}"
    return (b"[" + raw + b"," + raw + b"]" if batch else raw), props


@PROFILE
@given(value=st.none() | st.binary(max_size=2000), hdrs=headers)
def test_any_bytes_and_headers_give_an_outcome(
    value: bytes | None, hdrs: list[tuple[str, bytes | None]] | None
) -> None:
    check_rows(run(value, hdrs))


@PROFILE
@given(doc=event_docs, batch=st.booleans(), hdrs=headers)
def test_any_event_like_document_gives_an_outcome_and_exact_properties(
    doc: dict[str, Any], batch: bool, hdrs: list[tuple[str, bytes | None]] | None
) -> None:
    value, props = _message(doc, batch)
    fates = run(value, hdrs)
    check_rows(fates)
    for routed in fates.rows:
        assert read_row(routed.row.line).properties == props  # the producer's text, unchanged


@PROFILE
@given(value=st.binary(max_size=300), cut=st.integers(min_value=0, max_value=400))
def test_valid_events_cut_or_spliced_anywhere_give_an_outcome(value: bytes, cut: int) -> None:
    good = orjson.dumps(base_event)
    check_rows(run(good[:cut] + value + good[cut:], None))


@PROFILE
@given(doc=event_docs, batch=st.booleans(), hdrs=headers)
def test_the_hot_path_gives_any_event_like_document_the_reference_fates(
    doc: dict[str, Any], batch: bool, hdrs: list[tuple[str, bytes | None]] | None
) -> None:
    assert_paths_agree(_message(doc, batch)[0], hdrs)


@PROFILE
@given(value=st.none() | st.binary(max_size=2000), hdrs=headers)
def test_the_hot_path_gives_any_bytes_the_reference_fates(
    value: bytes | None, hdrs: list[tuple[str, bytes | None]] | None
) -> None:
    assert_paths_agree(value, hdrs)


@PROFILE
@given(value=st.binary(max_size=300), cut=st.integers(min_value=0, max_value=400))
def test_the_hot_path_gives_spliced_events_the_reference_fates(value: bytes, cut: int) -> None:
    good = orjson.dumps(base_event)
    assert_paths_agree(good[:cut] + value + good[cut:], None)
