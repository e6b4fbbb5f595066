"""The ClickHouse server process: ClickHouse 26.9 from the chdb-core wheel with real listeners.

    python -m devstack.clickhouse_server --data DIR --http-port 28123 --tcp-port 29000 --token T

Writes ./config.xml (clickhouse-local reads it from the working directory), then runs one
query through chdb's LocalServer: `SYSTEM START LISTEN HTTP/TCP` followed by an endless
`sleepEachRow` tagged with the token. The listeners live as long as that query runs, so
`KILL QUERY WHERE query LIKE '%<token>%'` stops the server; while clients still hold
keep-alive connections its shutdown lingers ~5 s, so the stopper follows up with SIGTERM.
Start-up errors (code 76 data dir locked, code 210 port in use) are printed to stderr by
ClickHouse and the call just returns: the parent watches this process's log and its
readiness query.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from xml.sax.saxutils import escape

# ~1.5e7 years of one row per half second: "forever". A KILL QUERY lands within 0.5 s.
_FOREVER_ROWS = 10**15


def config_xml(host: str, http_port: int, tcp_port: int) -> str:
    return (
        "<clickhouse>\n"
        f"  <listen_host>{escape(host)}</listen_host>\n"
        f"  <http_port>{http_port}</http_port>\n"
        f"  <tcp_port>{tcp_port}</tcp_port>\n"
        "</clickhouse>\n"
    )


def keepalive_sql(token: str) -> str:
    return (
        "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
        f"SELECT sleepEachRow(0.5) FROM numbers({_FOREVER_ROWS}) "
        f"SETTINGS max_block_size = 1 FORMAT Null /* {token} */"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.clickhouse_server")
    parser.add_argument("--data", required=True, type=Path, help="ClickHouse data directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", required=True, type=int)
    parser.add_argument("--tcp-port", required=True, type=int)
    parser.add_argument("--token", required=True, help="tag of the keep-alive query")
    args = parser.parse_args(argv)
    if not args.token.replace("_", "").isalnum():
        parser.error("--token must be alphanumeric/underscore")

    Path("config.xml").write_text(config_xml(args.host, args.http_port, args.tcp_port))
    args.data.mkdir(parents=True, exist_ok=True)
    print(
        f"devstack clickhouse_server pid {os.getpid()}: http {args.host}:{args.http_port}, "
        f"native {args.host}:{args.tcp_port}, data {args.data}",
        flush=True,
    )
    import chdb._chdb as chdb_native  # heavy (~180 MB engine): import only here

    run_query = getattr(chdb_native, "query")  # noqa: B009 (untyped extension module)
    try:
        # TabSeparated becomes the HTTP default format (CSV breaks clickhouse-connect).
        run_query(keepalive_sql(args.token), "TabSeparated", path=str(args.data))
    except Exception as exc:  # chdb raises on SQL errors
        print(f"devstack clickhouse_server: query failed: {exc}", file=sys.stderr, flush=True)
        return 1
    print("devstack clickhouse_server: clickhouse-local returned, exiting", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
