"""`python -m analytics_core.trace EVENT_ID [--client ID] [--since 7d] [--json]`.

Exit status: 0 found, 1 not found anywhere, 2 could not trace (bad id, unknown client,
bad configuration), 3 not found but a ClickHouse target could not be searched (no verdict).
"""

from __future__ import annotations

import argparse
import json
import sys

from analytics_core.connections import open_connections
from analytics_core.settings import Settings, SettingsError
from analytics_core.trace.model import TraceError
from analytics_core.trace.render import text
from analytics_core.trace.run import DEFAULT_MAX_MESSAGES, TraceOptions, parse_since, trace_event


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analytics_core.trace",
        description="Report every place an event is or was: ClickHouse rows, Kafka coordinates, "
        "dead letters, reprocessing outcome.",
    )
    parser.add_argument("event_id", help="the event id (UUID)")
    parser.add_argument("--client", help="search only this client's database")
    parser.add_argument(
        "--since",
        default="7d",
        help="dead letters produced since: 90m, 24h, 7d or an ISO time (default 7d)",
    )
    parser.add_argument(
        "--max-messages",
        type=int,
        default=DEFAULT_MAX_MESSAGES,
        help=f"bound of the dead-letter scan (default {DEFAULT_MAX_MESSAGES})",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    since = parse_since(args.since)
    if since is None:
        parser.error(f"--since {args.since!r}: use 90m, 24h, 7d or an ISO 8601 time")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    with open_connections(settings) as connections:
        report = trace_event(
            connections, args.event_id, args.client, TraceOptions(since, args.max_messages)
        )
    if args.json:
        doc = (
            {"event_id": report.event_id, "error": report.reason}
            if isinstance(report, TraceError)
            else report.to_dict()
        )
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(text(report))
    if isinstance(report, TraceError):
        return 2
    if not report.conclusive:
        return 3
    return 0 if report.found else 1


if __name__ == "__main__":
    sys.exit(main())
