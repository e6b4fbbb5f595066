"""`admin move-client` and `admin targets`: the operator's side of placement and moves.

`move-client ID --to TARGET` runs the same code as the Dagster job `move_client`
(analytics_core.moves.run), printing each step; run it again after any failure or crash and
it resumes where the move stopped. `--abandon` gives up a move that has not switched yet.
Exit codes: 0 done (or nothing to do), 1 failed (re-run it), 2 refused (nothing changed).
"""

from __future__ import annotations

import argparse
import sys

from analytics_core import pg, registry
from analytics_core.connections import Connections, open_connections
from analytics_core.lifecycle import StepFailed
from analytics_core.moves import store
from analytics_core.moves.run import MoveOptions, abandon_move, move_client
from analytics_core.settings import Settings


def add_parsers(sub: argparse._SubParsersAction) -> None:
    move = sub.add_parser(
        "move-client",
        help="move a client's database to another ClickHouse target (resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    move.add_argument("client_id")
    move.add_argument("--to", dest="target", help="the target to move it to (CLICKHOUSE_TARGETS)")
    move.add_argument(
        "--abandon", action="store_true", help="give up the client's unfinished move (pre-switch)"
    )
    move.add_argument(
        "--grace-s",
        type=float,
        default=MoveOptions.grace_s,
        help="seconds between the registry switch and the fence (default %(default)s)",
    )
    move.add_argument("--requested-by", default="", help="who asks (recorded in the audit log)")
    sub.add_parser("targets", help="the configured ClickHouse targets and their clients")


def run_targets(settings: Settings) -> int:
    """One line per configured target with its clients; a target clients are placed on but
    the settings lack is listed on stderr (exit 1)."""
    conn = pg.connect(settings.postgres)
    try:
        counts = registry.clients_per_target(conn)
    finally:
        conn.close()
    configured = settings.clickhouse_targets()
    for name, ch in configured.items():
        where = f"{ch.host}:{ch.http_port}" + (f" (cluster {ch.cluster})" if ch.cluster else "")
        print(f"{name:<12} {where:<40} {counts.get(name, 0)} client(s)")
    unknown = sorted(set(counts) - set(configured))
    for name in unknown:
        print(
            f"{name:<12} NOT CONFIGURED (CLICKHOUSE_TARGETS) {counts[name]} client(s)",
            file=sys.stderr,
        )
    return 1 if unknown else 0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _failed(c: Connections, client_id: str, outcome: StepFailed) -> int:
    move = store.open_move(c.registry, client_id)
    at = f" (move {move.id} is at step {move.step})" if move else ""
    print(f"move refused or failed{at}: {outcome.reason}", file=sys.stderr)
    return 2 if outcome.refused else 1


def run_move(settings: Settings, args: argparse.Namespace) -> int:
    actor = args.requested_by.strip()[:200] or "cli"
    if args.abandon == bool(args.target):
        print("error: give either --to TARGET or --abandon", file=sys.stderr)
        return 2
    if args.grace_s < 0:
        print("error: --grace-s must be >= 0", file=sys.stderr)
        return 2
    with open_connections(settings) as c:
        if args.abandon:
            dropped = abandon_move(c, args.client_id, actor=actor)
            if isinstance(dropped, StepFailed):
                return _failed(c, args.client_id, dropped)
            print(f"move {dropped.move_id} of {args.client_id} to {dropped.dest} abandoned")
            return 0
        options = MoveOptions(grace_s=args.grace_s)
        moved = move_client(
            c, args.client_id, args.target, actor=actor, options=options, progress=_say
        )
        if isinstance(moved, StepFailed):
            return _failed(c, args.client_id, moved)
    if moved.already:
        print(f"client {args.client_id} is on target {args.target} already; nothing to do")
    else:
        print(
            f"client {args.client_id} moved from {moved.source} to {moved.dest} "
            f"(move {moved.move_id}): {moved.counts}"
        )
    return 0
