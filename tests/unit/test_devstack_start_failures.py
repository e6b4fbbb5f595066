"""devstack's start-failure reasons: the log line that says what to fix (pure, no server)."""

from __future__ import annotations

from devstack.kafka import KafkaService
from devstack.service import first_fatal_line

# What Kafka 4.1 logged when another process held its port (shortened from a real log).
KAFKA_PORT_TAKEN = "\n".join(
    [
        "[2026-12-01 21:42:16,700] INFO [BrokerServer id=1] Waiting for the broker to be unfenced",
        "[2026-12-01 21:42:16,784] ERROR Unable to start acceptor for PLAINTEXT "
        "(kafka.network.DataPlaneAcceptor)",
        "org.apache.kafka.common.KafkaException: Socket server failed to bind to "
        "127.0.0.1:29192: Address already in use.",
        "\tat kafka.network.Acceptor.openServerSocket(SocketServer.scala:735)",
        "Caused by: java.net.BindException: Address already in use",
        "[2026-12-01 21:42:16,790] ERROR [BrokerServer id=1] Fatal error during broker "
        "startup. Prepare to shutdown (kafka.server.BrokerServer)",
        "[2026-12-01 21:42:17,043] ERROR Exiting Kafka due to fatal exception during "
        "startup. (kafka.Kafka$)",
        "[2026-12-01 21:42:17,253] INFO [SnapshotGenerator id=1] closed event queue. "
        "(org.apache.kafka.queue.KafkaEventQueue)",
    ]
)


def test_a_kafka_port_taken_is_named_not_just_the_exit() -> None:
    reason = first_fatal_line(KAFKA_PORT_TAKEN, KafkaService.fatal_patterns)
    assert reason == (
        "org.apache.kafka.common.KafkaException: Socket server failed to bind to "
        "127.0.0.1:29192: Address already in use."
    )


def test_without_a_known_cause_the_exit_line_is_the_reason() -> None:
    log = "[t] INFO starting\n[t] ERROR Exiting Kafka due to fatal exception during startup.\n"
    reason = first_fatal_line(log, KafkaService.fatal_patterns)
    assert reason == "[t] ERROR Exiting Kafka due to fatal exception during startup."
    assert first_fatal_line("[t] INFO all good\n", KafkaService.fatal_patterns) is None
