"""`python -m router.send_events`: send test events to shared_raw_events.

Like the original design's send_test_event.py, for demos, benchmarks and tests:
valid events for a client at a chosen rate, and with --invalid KIND each kind
of bad input the router must dead-letter.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from collections.abc import Iterable, Iterator

import orjson

from analytics_core import cli_values, kafka_clients
from analytics_core.logging_setup import RepeatedLines
from analytics_core.settings import Settings, SettingsError

INVALID_KINDS = (
    "invalid_json",
    "invalid_encoding",
    "payload_too_large",
    "schema_violation",
    "unknown_client",
    "invalid_api_key",
    "sql_client_id",
)


def valid_event(client_id: str, api_key: str, i: int, *, pad: int = 0) -> dict[str, object]:
    now_ms = int(time.time() * 1000)
    props: dict[str, object] = {"url": f"/page/{i % 50}", "referrer": "https://example.com", "n": i}
    if pad:
        props["pad"] = "x" * pad
    return {
        "client_id": client_id,
        "api_key": api_key,
        "event_id": str(uuid.uuid4()),
        "event_name": "page_view",
        "timestamp": now_ms,
        "sent_at": now_ms,
        "user_id": f"user-{i % 1000}",
        "properties": props,
    }


def invalid_message(kind: str, client_id: str, api_key: str, i: int) -> bytes:
    good = valid_event(client_id, api_key, i)
    if kind == "invalid_json":
        return b'{"client_id": "' + client_id.encode() + b'", "truncated'
    if kind == "invalid_encoding":
        return b'{"client_id": "\xff\xfe"}'
    if kind == "payload_too_large":
        good["properties"] = {"blob": "x" * 600_000}
        return orjson.dumps(good)
    if kind == "schema_violation":
        good["timestamp"] = "yesterday"
        return orjson.dumps(good)
    if kind == "unknown_client":
        good["client_id"] = "no-such-client-" + uuid.uuid4().hex[:8]
        return orjson.dumps(good)
    if kind == "invalid_api_key":
        good["api_key"] = "wrong-key"
        return orjson.dumps(good)
    if kind == "sql_client_id":
        good["client_id"] = "x'; DROP DATABASE default; --"
        return orjson.dumps(good)
    raise ValueError(f"unknown invalid kind {kind!r}; choose from {', '.join(INVALID_KINDS)}")


def messages(args: argparse.Namespace) -> Iterator[tuple[bytes, bytes]]:
    for i in range(args.count):
        client = args.client_id[i % len(args.client_id)]
        if args.invalid:
            yield client.encode(), invalid_message(args.invalid, client, args.api_key, i)
        else:
            event = valid_event(client, args.api_key, i, pad=args.pad)
            if args.prepare:
                # Built before the clock starts: the send time is Kafka's CreateTime.
                del event["sent_at"]
            yield client.encode(), orjson.dumps(event)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m router.send_events",
        description="Send test events to the raw events topic (KAFKA_BOOTSTRAP_SERVERS).",
    )
    p.add_argument(
        "--client-id",
        action="append",
        required=True,
        help="client id (repeat to spread events over several clients)",
    )
    p.add_argument("--api-key", required=True, help="the clients' API key (plain)")
    p.add_argument("--count", type=int, default=10, help="number of messages (default 10)")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="messages per second; 0 = as fast as possible (default)",
    )
    p.add_argument("--invalid", choices=INVALID_KINDS, help="send this kind of bad message instead")
    p.add_argument(
        "--pad",
        type=cli_values.whole(0, 900_000),
        default=0,
        help="extra bytes of property padding per event (0-900000: a message stays under 1 MB)",
    )
    p.add_argument(
        "--prepare",
        action="store_true",
        help="serialise all messages before sending (benchmarks: the producer then only sends;"
        " events carry no sent_at, so latency is measured from Kafka's CreateTime)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.count < 0 or args.rate < 0:
        print("send_events: --count and --rate must be >= 0", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"send_events: configuration error: {exc}", file=sys.stderr)
        return 2
    producer = kafka_clients.producer(settings.kafka, **{"linger.ms": 10, "logger": _kafka_log()})
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    source: Iterable[tuple[bytes, bytes]] = messages(args)
    if args.prepare:
        source = list(source)
        print(f"prepared {len(source)} messages; sending", flush=True)
    started = time.monotonic()
    sent = 0
    for key, value in source:
        while True:
            try:
                producer.produce(
                    settings.kafka.raw_topic, value=value, key=key, on_delivery=delivered
                )
                break
            except BufferError:
                producer.poll(0.1)
        sent += 1
        producer.poll(0)
        if args.rate > 0:
            ahead = sent / args.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    left = producer.flush(30)
    elapsed = time.monotonic() - started
    print(
        f"sent {sent} messages to {settings.kafka.raw_topic} in {elapsed:.2f}s"
        f" ({sent / elapsed if elapsed else 0:.0f}/s); failed: {len(failures) + left}"
    )
    return 1 if failures or left else 0


def _kafka_log() -> logging.Logger:
    """librdkafka's lines on stderr, each shape once a minute (with Kafka away it logs every
    reconnect attempt)."""
    log = logging.getLogger("send_events.kafka")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("kafka: %(message)s"))
        log.addHandler(handler)
        log.addFilter(RepeatedLines())
        log.propagate = False
    return log


if __name__ == "__main__":
    sys.exit(main())
