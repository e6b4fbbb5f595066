"""A capture process killed after Kafka took a request but before it answered: the SDK
sends the request again to the next process, which must not write it a second time
(capture.restart_memory). Real processes, a real SIGKILL, the shared raw topic."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
import requests

from analytics_core.settings import Settings
from tests.conftest import ClientFixture
from tests.integration.capture.conftest import CaptureProcess
from tests.integration.router_support import end_offsets

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
