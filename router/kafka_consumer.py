"""The router's Kafka consumer configuration (pure), chosen for fast takeover.

Invariants:
- offsets are stored and committed only by the router (`router.offsets`), never by the
  client library;
- partitions move cooperatively (`cooperative-sticky`): a rebalance takes only the
  partitions that change owner, the others keep flowing;
- a router that dies is noticed within `ROUTER_SESSION_TIMEOUT_MS` (6 s by default, the
  broker's usual minimum), and its partitions are then taken over by the others;
- with `ROUTER_GROUP_INSTANCE_ID` set (static membership) a router restarted under the same
  id gets its partitions back at once, without a rebalance and without waiting for the
  session timeout.
"""

from __future__ import annotations

import logging
from typing import Any

from analytics_core import kafka_clients
from router.config import RouterSettings


def consumer_config(rs: RouterSettings) -> dict[str, Any]:
    """The factory's consumer (security, explicit commits, earliest) with the router's tuning."""
    overrides: dict[str, Any] = {
        "client.id": rs.instance_id,
        "enable.auto.offset.store": False,
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": rs.session_timeout_ms,
        "heartbeat.interval.ms": max(100, min(1000, rs.session_timeout_ms // 3)),
        "max.poll.interval.ms": 300000,
        "fetch.min.bytes": 1,
        "queued.max.messages.kbytes": 65536,
        "logger": logging.getLogger("router.kafka"),  # librdkafka's lines as JSON logs
    }
    if rs.group_instance_id:
        overrides["group.instance.id"] = rs.group_instance_id
    return kafka_clients.consumer_config(rs.common.kafka, rs.group_id, **overrides)
