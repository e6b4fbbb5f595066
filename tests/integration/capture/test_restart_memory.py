"""A capture process killed after Kafka took a request but before it answered: the SDK
sends the request again to the next process, which must not write it a second time
(capture.restart_memory). Real processes, a real SIGKILL, the shared raw topic."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
import requests

from analytics_core import kafka_clients
from analytics_core.settings import Settings
from capture import restart_memory
from tests.conftest import ClientFixture
from tests.integration.capture.conftest import CaptureProcess
from tests.integration.router_support import end_offsets, private_topics

pytestmark = pytest.mark.integration
DEDUPLICATED = "capture_events_deduplicated_total"


def test_a_retry_of_what_a_killed_process_wrote_is_not_written_again(
    stack: Settings,
    make_client: Callable[[str], ClientFixture],
    start_capture: Callable[..., CaptureProcess],
) -> None:
    client = make_client("restart")
    run = uuid.uuid4().hex[:8]
    body = json.dumps(
        {
            "batch": [
                {"type": "track", "event": "e", "userId": "u", "messageId": f"{run}-{i}"}
                for i in range(5)
            ]
        }
    )
    headers = {"Content-Type": "application/json"}
    auth = (client.api_key, "")
    topic = stack.kafka.raw_topic

    first = start_capture()
    assert first.post("/v1/batch", body, auth=auth, headers=headers).status_code == 200
    first.crash()  # as if killed before its 200 reached the SDK
    with pytest.raises(requests.ConnectionError):  # nothing of it serves any more
        requests.get(first.url + "/healthz", timeout=2)

    written = end_offsets(stack, topic)
    second = start_capture()
    again = second.post("/v1/batch", body, auth=auth, headers=headers)
    assert again.status_code == 200, again.text
    assert second.metric(DEDUPLICATED) == 5
    assert end_offsets(stack, topic) == written  # acknowledged, and nothing written
    assert "recent writes remembered as acknowledged" in second.log()

    # The same retry to a process that does not read its recent writes: written twice.
    forgetful = start_capture(CAPTURE_RESTART_MEMORY_S="0")
    twice = forgetful.post("/v1/batch", body, auth=auth, headers=headers)
    assert twice.status_code == 200 and forgetful.metric(DEDUPLICATED) == 0
    assert sum(end_offsets(stack, topic).values()) == sum(written.values()) + 1


def test_the_read_back_keeps_the_newest_ids_within_its_bounds(
    stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with private_topics(stack, "restart", partitions=2) as s:
        topic = s.kafka.raw_topic
        producer = kafka_clients.producer(s.kafka)
        for i in range(40):
            value = json.dumps([{"event_id": f"e{i}a"}, {"event_id": f"e{i}b"}]).encode()
            producer.produce(topic, value, key=b"one-partition")
        producer.produce(topic, b'{"batch":[]}', key=b"one-partition")  # no ids: skipped
        assert producer.flush(30) == 0

        capped = restart_memory.read_recent(s.kafka, topic, 120, max_events=10)
        assert capped.problem is None and capped.events == 10
        assert [w.event_ids for w in capped.messages] == [
            [f"e{i}a", f"e{i}b"] for i in range(35, 40)
        ]
        offsets = [w.offset for w in capped.messages]
        assert offsets == sorted(offsets) and len({w.partition for w in capped.messages}) == 1

        # Read backwards in steps: it stops once it holds enough ids, not at the span's end.
        monkeypatch.setattr(restart_memory, "STEP_MESSAGES", 4)
        stepped = restart_memory.read_recent(s.kafka, topic, 120, max_events=10)
        assert [w.event_ids for w in stepped.messages] == [
            [f"e{i}a", f"e{i}b"] for i in range(35, 40)
        ]
        assert stepped.read == 8  # two steps of 4 (one message without ids), not 41
        assert capped.read == 41

        monkeypatch.setattr(restart_memory, "READ_MESSAGES", 2 * 4)  # 4 per partition
        tail = restart_memory.read_recent(s.kafka, topic, 120, max_events=1000)
        assert [w.event_ids[0] for w in tail.messages] == ["e37a", "e38a", "e39a"]
        assert tail.read == 4

        assert restart_memory.read_recent(s.kafka, topic, 0.001, 1000).messages == []
