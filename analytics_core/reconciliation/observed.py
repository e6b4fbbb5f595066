"""What can be observed of a client's events: rows (ClickHouse), dead letters (Kafka) and
parked dead letters (PostgreSQL). Each function reads one source.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime

import psycopg2
import psycopg2.errors
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.external import ExternalData
from confluent_kafka import Message

from analytics_core.dead_letter import has_replay_headers, header_map
from analytics_core.events_table import EVENTS_TABLE, EventKey, stored_keys_query
from analytics_core.kafka_headers import readable_headers
from analytics_core.kafka_reads import ScanBounds, read_offsets, scan_topic
from analytics_core.naming import quote_identifier
from analytics_core.reconciliation.accounting import table_ref
from analytics_core.reconciliation.duplicates import Coordinates, ReadMessage
from analytics_core.reconciliation.model import LetterSighting, RowGroup, ScanSummary
from analytics_core.reconciliation.window import ROUTED
from analytics_core.registry import Conn
from analytics_core.settings import KafkaSettings

PARKED_TABLE = "parked_dead_letters"


def _ranges_sql(ops_database: str, *, only_client: bool) -> str:
    """The accounting ranges a row is matched to; `only_client`: just those that counted any
    fate of the client (what is shipped to another server, see read_row_groups)."""
    return (
        "SELECT consumer_group, topic, partition AS p, first_offset AS o, next_offset,"
        " arrayMap(k -> toUInt32(splitByChar('|', k)[4]),"
        "  arrayFilter(k -> startsWith(k, {routed:String}), mapKeys(counts))) AS windows"
        f" FROM {table_ref(ops_database)} FINAL"
        " WHERE recorded_at >= toDateTime({since:UInt32}, 'UTC')"
        " AND consumer_group IN {groups:Array(String)}"
        + (
            " AND arrayExists(k -> startsWith(k, {client:String}), mapKeys(counts))"
            if only_client
            else ""
        )
    )


RANGES_STRUCTURE = [
    "consumer_group String",
    "topic String",
    "p UInt32",
    "o UInt64",
    "next_offset UInt64",
    "windows Array(UInt32)",
]


def read_row_groups(
    ch: Client,
    database: str,
    ops_database: str,
    client_id: str,
    *,
    rows_since: datetime,
    ranges_since: datetime,
    topics: Sequence[str],
    groups: Sequence[str],
    ops: Client | None = None,
) -> list[RowGroup]:
    """The client's stored copies, each matched by ASOF join to the range at or before its
    Kafka offset, counted per range group / placement / window.

    Invariant: a stored copy is one Kafka coordinate (topic, partition, offset, batch index),
    counted without FINAL, because the router accounts every routed copy: a producer that
    sends the same event twice has two routed copies and, until a merge collapses them, two
    rows (FINAL and the `events` view show one). `duplicates` counts the copies of an event
    that has an earlier stored copy; once a merge removed them, `collapsed_copies` proves
    them from Kafka.

    The window of a row inside a range is the range's window for the client's routed
    events (`reconcile.pick_window`, written in SQL): a row re-read after a crash keeps its
    first received_at, but the range that finally committed it decides.

    `ops`: the server of the ops database when it is not `ch` (the client is placed on
    another ClickHouse target). The ranges that counted any fate of the client are read there
    and sent with the row query as an external table; every row of the client lies in such a
    range (a range counts every event it commits), so the join matches the same ranges.
    """
    params = {
        "rows_since": int(rows_since.timestamp()),
        "since": int(ranges_since.timestamp()),
        "topics": list(topics),
        # An empty IN list is not valid SQL; '' is never a consumer group.
        "groups": list(groups) or [""],
        "routed": f"{client_id}|{ROUTED}|",
        "client": f"{client_id}|",
    }
    external = None
    if ops is None:
        ranges = _ranges_sql(ops_database, only_client=False)
    else:
        shipped = ops.raw_query(
            _ranges_sql(ops_database, only_client=True), parameters=params, fmt="TabSeparated"
        )
        external = ExternalData(
            file_name="client_ranges",
            data=shipped,
            fmt="TabSeparated",
            structure=RANGES_STRUCTURE,
        )
        ranges = "SELECT * FROM client_ranges"
    sql = (
        "SELECT r.consumer_group AS grp, e.topic AS tp, e.p AS part,"
        " e.o < r.next_offset AS ranged, r.next_offset AS after_offset,"
        " if(ranged, if(has(r.windows, e.h), e.h,"
        "   if(empty(r.windows), e.h, arrayMin(r.windows))), e.h) AS w,"
        " count(), min(e.o), max(e.o), countIf(e.dup)"
        " FROM ("
        "  SELECT topic, p, o, h, row_number() OVER (PARTITION BY d, n, id"
        "   ORDER BY topic, p, o, bi) > 1 AS dup"
        "  FROM ("
        "   SELECT kafka_topic AS topic, kafka_partition AS p, kafka_offset AS o,"
        "    batch_index AS bi, any(event_id) AS id, any(event_name) AS n,"
        "    any(toDate(event_timestamp)) AS d,"
        "    toUInt32(toUnixTimestamp(toStartOfHour(min(received_at)))) AS h"
        f"   FROM {quote_identifier(database)}.{EVENTS_TABLE}"
        "   WHERE received_at >= toDateTime({rows_since:UInt32}, 'UTC')"
        "    AND kafka_topic IN {topics:Array(String)}"
        "   GROUP BY topic, p, o, bi"
        "  )"
        " ) AS e"
        f" ASOF LEFT JOIN ({ranges}) AS r"
        " ON e.topic = r.topic AND e.p = r.p AND e.o >= r.o"
        " GROUP BY grp, tp, part, ranged, after_offset, w"
    )
    rows = ch.query(sql, parameters=params, external_data=external).result_rows
    return [
        RowGroup(
            topic=str(tp),
            partition=int(part),
            group=str(grp),
            ranged=bool(ranged),
            after_offset=int(after),
            window=int(w),
            count=int(n),
            min_offset=int(lo),
            max_offset=int(hi),
            duplicates=int(dups),
        )
        for grp, tp, part, ranged, after, w, n, lo, hi, dups in rows
    ]


def read_stored_coordinates(
    ch: Client, database: str, spans: Sequence[tuple[str, int, int, int]]
) -> set[Coordinates]:
    """Coordinates (topic, partition, offset, batch index) of the rows stored in the spans
    (topic, partition, first offset, next offset), without FINAL: every stored copy."""
    found: set[Coordinates] = set()
    for topic, partition, start, end in spans:
        rows = ch.query(
            "SELECT DISTINCT kafka_offset, batch_index"
            f" FROM {quote_identifier(database)}.{EVENTS_TABLE}"
            " WHERE kafka_topic = {t:String} AND kafka_partition = {p:UInt32}"
            " AND kafka_offset >= {lo:UInt64} AND kafka_offset < {hi:UInt64}",
            parameters={"t": topic, "p": partition, "lo": start, "hi": end},
        ).result_rows
        found.update((topic, partition, int(o), int(bi)) for o, bi in rows)
    return found


def read_stored_keys(ch: Client, database: str, keys: Collection[EventKey]) -> set[EventKey]:
    """Which of `keys` (the table's sort key: event id, name, day) have a stored row."""
    if not keys:
        return set()
    sql, params = stored_keys_query(database, keys)
    rows = ch.query(sql, parameters=params).result_rows
    stored = {EventKey(str(i), str(n), d) for i, n, d in rows}
    return stored & set(keys)


def read_back_messages(
    kafka: KafkaSettings, topic: str, wanted: Mapping[int, Collection[int]]
) -> list[ReadMessage]:
    """The messages of `topic` at `wanted` offsets ({partition: offsets}) still in Kafka."""
    found: list[ReadMessage] = []

    def keep(msg: Message) -> None:
        found.append(
            ReadMessage(
                topic=topic,
                partition=int(msg.partition() or 0),
                offset=int(msg.offset() or 0),
                value=msg.value(),
                timestamp_ms=int(msg.timestamp()[1]),
                replay=has_replay_headers(readable_headers(msg)),
            )
        )

    read_offsets(kafka, topic, wanted, keep)
    return found


def scan_dead_letters(
    kafka: KafkaSettings,
    client_id: str,
    topics: Sequence[str],
    *,
    since: datetime,
    max_messages: int,
) -> tuple[list[LetterSighting], ScanSummary]:
    """The client's dead letters on the dead-letter topic produced since `since`."""
    wanted = set(topics)
    found: list[LetterSighting] = []

    def visit(msg: Message) -> None:
        h = header_map(readable_headers(msg))
        if h.get("dl-client-id") != client_id or h.get("dl-source-topic") not in wanted:
            return
        try:
            partition = int(h["dl-source-partition"])
            offset = int(h["dl-source-offset"])
            batch_index = int(h["dl-batch-index"]) if h.get("dl-batch-index") else None
        except (KeyError, ValueError):
            return
        ts_ms = msg.timestamp()[1]
        found.append(
            LetterSighting(
                topic=h["dl-source-topic"],
                partition=partition,
                offset=offset,
                batch_index=batch_index,
                reason=h.get("dl-reason", ""),
                seen_at=datetime.fromtimestamp(max(ts_ms, 0) / 1000, UTC),
            )
        )

    result = scan_topic(
        kafka, kafka.dead_letter_topic, ScanBounds(since, max_messages=max_messages), visit
    )
    detail = result.detail or f"read {result.read} dead letter(s) since {since.isoformat()}"
    return found, ScanSummary(result.complete, result.read, detail)


def read_parked(
    conn: Conn, client_id: str, topics: Sequence[str], *, since: datetime
) -> tuple[list[LetterSighting], str | None]:
    """Parked dead letters of the client; the note says why none could be read."""
    with conn.cursor() as cur:
        try:
            cur.execute(
                "SELECT source_topic, source_partition, source_offset, batch_index, reason,"
                f" COALESCE(first_failed_at, parked_at) FROM {PARKED_TABLE}"
                " WHERE client_id = %s AND source_topic = ANY(%s) AND parked_at >= %s"
                " AND source_partition IS NOT NULL AND source_offset IS NOT NULL",
                (client_id, list(topics), since),
            )
        except psycopg2.errors.UndefinedTable:
            conn.rollback()
            return [], (
                f"table {PARKED_TABLE} does not exist (dead-letter reprocessing not "
                "installed): parked records not counted"
            )
        rows = cur.fetchall()
    conn.commit()
    return [
        LetterSighting(
            topic=str(t),
            partition=int(p),
            offset=int(o),
            batch_index=None if bi is None else int(bi),
            reason=str(reason),
            seen_at=at if at.tzinfo else at.replace(tzinfo=UTC),
            on_topic=False,
            parked=True,
        )
        for t, p, o, bi, reason, at in rows
    ], None


def merge_sightings(
    on_topic: Sequence[LetterSighting], parked: Sequence[LetterSighting]
) -> list[LetterSighting]:
    """One sighting per failed copy (source coordinates + batch index).

    A crash re-read may dead-letter the same copy twice, and a letter may be both on the
    topic and parked; the router's accounting counts it once.
    """
    merged: dict[tuple[str, int, int, int | None], LetterSighting] = {}
    for s in on_topic:
        merged.setdefault(s.key, s)
    for s in parked:
        prev = merged.get(s.key)
        if prev is None:
            merged[s.key] = s
        else:
            merged[s.key] = LetterSighting(
                prev.topic,
                prev.partition,
                prev.offset,
                prev.batch_index,
                prev.reason,
                prev.seen_at,
                on_topic=prev.on_topic,
                parked=True,
            )
    return list(merged.values())
