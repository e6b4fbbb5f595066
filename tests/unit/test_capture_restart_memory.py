"""Reading event ids back from raw-topic messages (capture.restart_memory, pure part)."""

from __future__ import annotations

from capture.restart_memory import event_ids_in


def test_the_ids_of_contract_messages_and_nothing_of_anything_else() -> None:
    batch = b'[{"event_id":"a","event_name":"x"},{"event_name":"no id"},{"event_id":"b"}]'
    assert event_ids_in(batch) == ["a", "b"]
    assert event_ids_in(b'{"event_id":"c","properties":{"event_id":"not this"}}') == ["c"]
    assert event_ids_in(b'{"batch":[{"messageId":"m"}]}') == []  # not contract JSON
    for junk in (None, b"", b"\xff", b"[1,2]", b'{"event_id":5}', b"[" * 100_000, b"null"):
        assert event_ids_in(junk) == []
