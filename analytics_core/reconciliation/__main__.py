"""`python -m analytics_core.reconciliation --client ID [--json]`: reconcile from a shell.

Exit status: 0 balanced, 1 problems found, 2 could not reconcile (or bad configuration).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from analytics_core.connections import open_connections
from analytics_core.reconciliation.model import Unavailable
from analytics_core.reconciliation.render import text
from analytics_core.reconciliation.run import ReconciliationOptions, reconcile_client
from analytics_core.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analytics_core.reconciliation",
        description="Prove per window that every event the router consumed for a client is a "
        "row, a dead letter or a parked record.",
    )
    parser.add_argument("--client", required=True, help="client id")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--grace-s", type=float, help="default RECONCILIATION_GRACE_S (300)")
    parser.add_argument(
        "--lookback-hours", type=float, help="default RECONCILIATION_LOOKBACK_HOURS (48)"
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        options = ReconciliationOptions.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.grace_s is not None:
        options = dataclasses.replace(options, grace_s=args.grace_s)
    if args.lookback_hours is not None:
        options = dataclasses.replace(options, lookback_hours=args.lookback_hours)
    with open_connections(settings) as connections:
        report = reconcile_client(connections, args.client, options)
    if args.json:
        doc = (
            {"client_id": report.client_id, "unavailable": report.reason}
            if isinstance(report, Unavailable)
            else report.to_dict()
        )
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(text(report))
    if isinstance(report, Unavailable):
        return 2
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
