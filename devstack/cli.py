"""`python -m devstack {up,down,status,logs,reset,env}`: the local stack from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence

from analytics_core import cli_values
from analytics_core.settings import Settings, SettingsError

from . import api
from .environment import render_sh
from .options import ALL_SERVICES

SERVICES_HELP = (
    "comma list of services (" + ",".join(ALL_SERVICES) + "; aliases pg, ch) or single "
    "servers (kafka-2, clickhouse-ch2); default: $DEVSTACK_SERVICES, else all"
)


def _service_list(raw: str) -> str:
    if not raw.replace(",", "").strip():
        raise argparse.ArgumentTypeError("name at least one service: " + ", ".join(ALL_SERVICES))
    return raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description=(
            "Run PostgreSQL, Redis, Kafka (KRaft) and ClickHouse as local processes on "
            "127.0.0.1, with data under $PIPELINE_STATE_DIR (default <repo>/.state). "
            "Ports come from the same variables as the application (POSTGRES_PORT, "
            "REDIS_PORT, KAFKA_BOOTSTRAP_SERVERS, KAFKA_CONTROLLER_PORT, CLICKHOUSE_HTTP_PORT, "
            "CLICKHOUSE_NATIVE_PORT). DEVSTACK_SERVICES=pg,redis leaves the others to "
            "external servers. DEVSTACK_KAFKA_BROKERS=3 runs a three-node Kafka cluster "
            "(kafka-1..3, replication factor 3, min.insync.replicas 2); "
            "DEVSTACK_CLICKHOUSE_SERVERS=2 runs a second ClickHouse server as the target ch2. "
            '`eval "$(python -m devstack env)"` points a shell at the chosen topology.'
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start the services (idempotent) and wait until they answer")
    up.add_argument("--services", type=_service_list, help=SERVICES_HELP)
    up.add_argument(
        "--timeout",
        type=cli_values.above_zero(),
        help="seconds to wait per service (default 90, or $DEVSTACK_START_TIMEOUT)",
    )

    down = sub.add_parser("down", help="stop the services devstack started (data is kept)")
    down.add_argument("--services", type=_service_list, help=SERVICES_HELP)
    down.add_argument("--wipe", action="store_true", help="also delete their data (= reset)")

    st = sub.add_parser("status", help="each service: address, pid, health, memory")
    st.add_argument("--json", action="store_true", help="machine-readable output")

    lg = sub.add_parser("logs", help="print the tail of one service's log file(s)")
    lg.add_argument(
        "service",
        help="one of " + ", ".join(ALL_SERVICES) + ", or one server (kafka-2, clickhouse-ch2)",
    )
    lg.add_argument(
        "-n",
        "--lines",
        type=cli_values.whole(1, 1_000_000),
        default=50,
        help="number of lines (default 50)",
    )

    rs = sub.add_parser("reset", help="stop the services and delete their state")
    rs.add_argument("--services", type=_service_list, help=SERVICES_HELP)

    sub.add_parser(
        "env",
        help="print `export NAME=value` lines that point a process at this topology "
        "(all Kafka brokers, every ClickHouse target; no passwords)",
    )
    return parser


def _print_status(settings: Settings, as_json: bool) -> int:
    rows = api.status(settings)
    if as_json:
        out = [
            {
                "name": r.name,
                "managed": r.managed,
                "address": r.address,
                "pid": r.pid,
                "healthy": r.healthy,
                "detail": r.detail,
                "log": str(r.log_path) if r.log_path else None,
                "rss_mib": round(r.rss_bytes / 2**20, 1),
            }
            for r in rows
        ]
        print(json.dumps(out, indent=2))
    else:
        print(f"state dir: {settings.state_dir}")
        print(f"{'SERVICE':<15} {'MODE':<8} {'PID':>7} {'RSS':>9}  {'HEALTH':<8} ADDRESS / DETAIL")
        for r in rows:
            mode = "local" if r.managed else "external"
            pid = str(r.pid) if r.pid else "-"
            rss = f"{r.rss_bytes / 2**20:.0f} MiB" if r.rss_bytes else "-"
            health = "ok" if r.healthy else "DOWN"
            detail = "" if r.healthy else f"  ({r.detail})"
            print(f"{r.name:<15} {mode:<8} {pid:>7} {rss:>9}  {health:<8} {r.address}{detail}")
        total = sum(r.rss_bytes for r in rows)
        if total:
            print(f"total RSS of local services: {total / 2**20:.0f} MiB")
    return 0 if all(r.healthy for r in rows if r.managed) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="devstack: %(message)s", stream=sys.stderr)
    try:
        settings = Settings.from_env()
        if args.command == "up":
            t0 = time.monotonic()
            api.ensure_up(settings, args.services, start_timeout=args.timeout)
            logging.getLogger("devstack").info("stack up in %.1fs", time.monotonic() - t0)
            return 0
        if args.command == "down":
            if args.wipe:
                api.reset(settings, args.services)
            else:
                api.stop(settings, args.services)
            return 0
        if args.command == "reset":
            api.reset(settings, args.services)
            return 0
        if args.command == "status":
            return _print_status(settings, args.json)
        if args.command == "logs":
            print(api.logs(settings, args.service, args.lines))
            return 0
        if args.command == "env":
            sys.stdout.write(render_sh(api.environment(settings)))
            return 0
    except (api.StackError, SettingsError) as exc:
        print(f"devstack: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("devstack: interrupted", file=sys.stderr)
        return 130
    raise AssertionError(args.command)
