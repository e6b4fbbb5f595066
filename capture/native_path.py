"""The compiled fast path for Segment batches (the optional `capture_native` extension,
built from native/ by bin/setup when a Rust toolchain is there).

`capture_native.map_segment_batch` maps a whole batch body to the one Kafka message the
Python path (`segment_format.parse` -> `mapping.map_all` -> `chunks.pack`) would make of
it, byte for byte, or answers None for anything it does not map with certainty (an
invalid event, an escaped string, a message without an id...): the Python path then
reads the body as before. So the compiled path changes speed, never an answer;
tests/unit/test_capture_native.py holds that on a corpus and on mutations of it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from analytics_core.event_contract import MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES
from analytics_core.settings import SettingsError

_Mapper = Callable[[bytes, str, str, int, int, int], "tuple[bytes, list[str], str | None] | None"]


@dataclass(frozen=True, slots=True)
class FastBatch:
    """A batch mapped by the compiled path: one contract v1 message and its event ids."""

    value: bytes
    event_ids: list[str]
    write_key: str | None  # the write key the body carries, if any


class NativeBatchMapper:
    def __init__(self, mapper: _Mapper, max_event_bytes: int) -> None:
        self._map = mapper
        # One message holds the whole batch: within the message limit and, as in
        # chunks.pack, within the event limit (so no single event can be over it).
        self._max_bytes = min(MAX_MESSAGE_BYTES, max_event_bytes)

    def map(self, body: bytes, client_id: str, key_hash: str, received_ms: int) -> FastBatch | None:
        out = self._map(body, client_id, key_hash, received_ms, self._max_bytes, MAX_BATCH_EVENTS)
        return None if out is None else FastBatch(*out)


def load_native(mode: str, max_event_bytes: int) -> NativeBatchMapper | None:
    """The compiled mapper as CAPTURE_NATIVE asks: None when off, or when `auto` and it is
    not installed; `required` without it fails the start with what to do."""
    if mode == "off":
        return None
    try:
        module = importlib.import_module("capture_native")
    except ImportError:
        if mode == "required":
            raise SettingsError(
                "CAPTURE_NATIVE=required but the capture_native extension is not installed: "
                "install a Rust toolchain (https://rustup.rs) and run "
                "`.venv/bin/pip install ./native`, or set CAPTURE_NATIVE=auto"
            ) from None
        return None
    return NativeBatchMapper(module.map_segment_batch, max_event_bytes)
