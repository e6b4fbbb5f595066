"""Reading the router's accounting (`<ops database>.router_consumption`, always with FINAL).

Every query is bounded by `recorded_at >= since` and, except the islands, by the client's
key prefix (`client_id|`), so the volume read is proportional to the client's activity.
Missing database or table is an expected outcome (`accounting_problem`), not an exception.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from analytics_core.naming import quote_identifier
from analytics_core.reconciliation.model import AccountedCount, CountedRange, OffsetSpan, Stream
from analytics_core.reconciliation.window import DEAD_LETTERED, parse_count_key

CONSUMPTION_TABLE = "router_consumption"  # = analytics_core.ops_schema.CONSUMPTION_TABLE


def table_ref(ops_database: str) -> str:
    return f"{quote_identifier(ops_database)}.{CONSUMPTION_TABLE}"


def _filter(groups: Sequence[str] | None) -> str:
    base = "recorded_at >= toDateTime({since:UInt32}, 'UTC')"
    if groups is not None:
        base += " AND consumer_group IN {groups:Array(String)}"
    return base


def _params(since: datetime, groups: Sequence[str] | None, **extra: object) -> dict[str, object]:
    params: dict[str, object] = {"since": int(since.timestamp()), **extra}
    if groups is not None:
        params["groups"] = list(groups)
    return params


def accounting_problem(ch: Client, ops_database: str) -> str | None:
    """Why the accounting can not be read (None: it can)."""
    rows = ch.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": ops_database, "t": CONSUMPTION_TABLE},
    ).result_rows
    if not rows[0][0]:
        return (
            f"{ops_database}.{CONSUMPTION_TABLE} does not exist: no router has written "
            "accounting yet (routers create it at start unless ROUTER_RECONCILIATION=off)"
        )
    return None


def read_accounted(
    ch: Client,
    ops_database: str,
    client_id: str,
    since: datetime,
    groups: Sequence[str] | None = None,
) -> list[AccountedCount]:
    """The client's counts summed per group, topic and key, with the last recording time."""
    sql = (
        "SELECT consumer_group, topic, k, sum(v), max(recorded_at) FROM ("
        f" SELECT consumer_group, topic, counts, recorded_at FROM {table_ref(ops_database)} FINAL"
        f" WHERE {_filter(groups)}"
        ") ARRAY JOIN mapKeys(counts) AS k, mapValues(counts) AS v"
        " WHERE startsWith(k, {prefix:String})"
        " GROUP BY consumer_group, topic, k"
    )
    rows = ch.query(sql, parameters=_params(since, groups, prefix=client_id + "|")).result_rows
    out = []
    for group, topic, key, count, recorded in rows:
        parsed = parse_count_key(key)
        if parsed is None or parsed.client_id != client_id:
            continue
        out.append(
            AccountedCount(
                group=str(group),
                topic=str(topic),
                window=parsed.window,
                outcome=parsed.outcome,
                reason=parsed.reason,
                count=int(count),
                last_recorded=_utc(recorded),
            )
        )
    return out


def read_client_spans(
    ch: Client,
    ops_database: str,
    client_id: str,
    since: datetime,
    groups: Sequence[str] | None = None,
) -> list[OffsetSpan]:
    """Per stream, from the first to the last range that counted an event of the client."""
    sql = (
        "SELECT consumer_group, topic, partition, min(first_offset), max(next_offset)"
        f" FROM {table_ref(ops_database)} FINAL WHERE {_filter(groups)}"
        " AND arrayExists(k -> startsWith(k, {prefix:String}), mapKeys(counts))"
        " GROUP BY consumer_group, topic, partition"
    )
    rows = ch.query(sql, parameters=_params(since, groups, prefix=client_id + "|")).result_rows
    return [
        OffsetSpan(Stream(str(g), str(t), int(p)), int(lo), int(hi)) for g, t, p, lo, hi in rows
    ]


def read_islands(
    ch: Client, ops_database: str, since: datetime, groups: Sequence[str]
) -> list[OffsetSpan]:
    """Contiguous runs of ranges per stream (gaps and islands, computed by ClickHouse)."""
    if not groups:
        return []
    sql = (
        "SELECT consumer_group, topic, partition, min(first_offset), max(next_offset) FROM ("
        " SELECT consumer_group, topic, partition, first_offset, next_offset,"
        "  sum(toUInt64(prev_next != first_offset)) OVER (PARTITION BY consumer_group, topic,"
        "   partition ORDER BY first_offset ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
        "   AS island"
        " FROM ("
        "  SELECT consumer_group, topic, partition, first_offset, next_offset,"
        "   lagInFrame(next_offset, 1, first_offset) OVER (PARTITION BY consumer_group, topic,"
        "    partition ORDER BY first_offset ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)"
        "    AS prev_next"
        f"  FROM {table_ref(ops_database)} FINAL WHERE {_filter(groups)}"
        " )"
        ") GROUP BY consumer_group, topic, partition, island"
        " ORDER BY consumer_group, topic, partition, island"
    )
    rows = ch.query(sql, parameters=_params(since, groups)).result_rows
    return [
        OffsetSpan(Stream(str(g), str(t), int(p)), int(lo), int(hi)) for g, t, p, lo, hi in rows
    ]


def read_dead_ranges(
    ch: Client,
    ops_database: str,
    client_id: str,
    since: datetime,
    groups: Sequence[str] | None = None,
) -> list[CountedRange]:
    """Ranges that counted dead letters of the client (dead letters are few)."""
    return read_counted_ranges(ch, ops_database, client_id, DEAD_LETTERED, since, groups)


def read_counted_ranges(
    ch: Client,
    ops_database: str,
    client_id: str,
    outcome: str,
    since: datetime,
    groups: Sequence[str] | None = None,
    windows: Collection[int] | None = None,
) -> list[CountedRange]:
    """Ranges that counted events of the client with `outcome`, with their counts per window;
    `windows`: only ranges that counted one of these windows."""
    prefix = f"{client_id}|{outcome}|"
    wanted = set(windows) if windows is not None else None
    sql = (
        "SELECT consumer_group, topic, partition, first_offset, next_offset,"
        " mapFilter((k, v) -> startsWith(k, {prefix:String}), counts)"
        f" FROM {table_ref(ops_database)} FINAL WHERE {_filter(groups)}"
        " AND arrayExists(k -> startsWith(k, {prefix:String}), mapKeys(counts))"
    )
    rows = ch.query(sql, parameters=_params(since, groups, prefix=prefix)).result_rows
    out = []
    for g, t, p, lo, hi, counts in rows:
        per_window: dict[int, int] = {}
        for key, n in dict(counts).items():
            parsed = parse_count_key(key)
            if parsed is not None:
                per_window[parsed.window] = per_window.get(parsed.window, 0) + int(n)
        if wanted is None or not wanted.isdisjoint(per_window):
            out.append(CountedRange(Stream(str(g), str(t), int(p)), int(lo), int(hi), per_window))
    return out


def _utc(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    raise TypeError(f"expected a datetime from ClickHouse, got {type(value).__name__}")
