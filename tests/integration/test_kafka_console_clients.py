"""Apache Kafka's own command-line clients (Java, from the kafka-tools jar of the broker's
version) against the router: what existing Kafka tooling sends (keys, headers, every
compression codec, tombstones, junk) is routed or dead-lettered like anything else, and
the dead-letter envelope reads in kafka-console-consumer."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from analytics_core.settings import Settings
from devstack import kafka_jars
from tests.conftest import ClientFixture, Kafka, ch_scalar, event, wait_for
from tests.deploy.local_images import kafka_tools_jar

pytestmark = pytest.mark.integration

CODECS = ("zstd", "lz4", "snappy", "gzip")


def kafka_tool(settings: Settings, main: str, *args: str, stdin: str = "") -> str:
    """Runs one of Kafka's CLI classes against the stack; its standard output."""
    java = shutil.which("java")
    assert java is not None, "java is needed to run Kafka's tools (bin/setup installs it)"
    classpath = f"{kafka_jars.ensure_jars()}/*:{kafka_tools_jar()}"
    bootstrap = ("--bootstrap-server", settings.kafka.bootstrap_servers)
    proc = subprocess.run(
        [java, "-cp", classpath, main, *bootstrap, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def console_produce(settings: Settings, codec: str, lines: list[str]) -> None:
    """kafka-console-producer: each line `headers<TAB>key<TAB>value`, NULL = no value."""
    kafka_tool(
        settings,
        "org.apache.kafka.tools.ConsoleProducer",
        *("--topic", settings.kafka.raw_topic, "--compression-codec", codec),
        *("--producer-property", "acks=all"),
        *("--property", "parse.key=true", "--property", "parse.headers=true"),
        *("--property", "null.marker=NULL"),
        stdin="".join(line + "\n" for line in lines),
    )


def test_kafka_console_producer_events_are_routed_and_its_junk_dead_lettered(
    stack: Settings,
    kafka: Kafka,
    make_client,  # type: ignore[no-untyped-def]
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    client: ClientFixture = make_client("console")
    start_router()
    since = kafka.end_offsets(stack.kafka.dead_letter_topic)
    sent = {}
    for codec in CODECS:
        doc = event(client, event_id=str(uuid.uuid4()), event_name=f"console_{codec}")
        sent[doc["event_id"]] = doc
        console_produce(stack, codec, [f"source:cli\t{client.client_id}\t{json.dumps(doc)}"])
    console_produce(
        stack, "zstd", [f"source:cli\t{client.client_id}\tNULL", "source:cli\tjunk\t{not json"]
    )

    table = f"{client.database}.events_base"
    wait_for(lambda: ch_scalar(stack, f"SELECT count() FROM {table}") == len(CODECS), 60)
    names = ch_scalar(stack, f"SELECT arraySort(groupArray(event_name)) FROM {table}")
    assert names == sorted(f"console_{codec}" for codec in CODECS)
    ids = ch_scalar(stack, f"SELECT arraySort(groupArray(toString(event_id))) FROM {table}")
    assert ids == sorted(sent)

    def ours(letter: object, value: bytes | None) -> bool:
        return value is None or value == b"{not json"

    letters = kafka.read_dead_letters(since, ours, expect=2)
    got = sorted((letter.reason.value, letter.detail, value) for letter, value in letters)
    assert got[0][0] == got[1][0] == "invalid_json"
    assert {(detail, value) for _, detail, value in got} >= {("empty message", None)}
    assert any(value == b"{not json" and "not JSON" in detail for _, detail, value in got)

    # Kafka's own consumer reads the envelope: the reason is a plain header.
    ends = kafka.end_offsets(stack.kafka.dead_letter_topic)
    printed = ""
    for partition, start in since.items():
        if ends[partition] > start:
            printed += kafka_tool(
                stack,
                "org.apache.kafka.tools.consumer.ConsoleConsumer",
                *("--topic", stack.kafka.dead_letter_topic, "--partition", str(partition)),
                *("--offset", str(start), "--max-messages", str(ends[partition] - start)),
                *("--property", "print.headers=true", "--timeout-ms", "20000"),
            )
    assert printed.count("dl-reason:invalid_json") >= 2
    assert "{not json" in printed
