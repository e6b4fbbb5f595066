"""The event's rows in the client databases (ClickHouse).

All physical rows are returned (no FINAL): before a merge, a replayed event may have two
rows, which is worth seeing when tracing. Databases are searched through merge() in chunks,
so one query covers many clients.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from analytics_core.chunked import chunked
from analytics_core.events_table import EVENTS_TABLE
from analytics_core.naming import validate_identifier
from analytics_core.trace.model import RowHit

CHUNK = 100

_COLUMNS = (
    "_database, kafka_topic, kafka_partition, kafka_offset, batch_index, origin_partition,"
    " origin_offset, attempt, event_name, event_timestamp, sent_at, received_at, ingested_at,"
    " router_instance"
)


def existing_databases(ch: Client, names: Sequence[str]) -> list[str]:
    if not names:
        return []
    rows = ch.query(
        "SELECT database FROM system.tables WHERE database IN {names:Array(String)}"
        " AND name = {table:String}",
        parameters={"names": list(names), "table": EVENTS_TABLE},
    ).result_rows
    return sorted(str(r[0]) for r in rows)


def _utc(value: object) -> datetime:
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def find_rows(
    ch: Client, databases: Mapping[str, str | None], event_id: str, target: str = "default"
) -> list[RowHit]:
    """Rows with this event id in `databases` (database -> client id) on one target."""
    names = [validate_identifier(d) for d in sorted(databases)]
    hits: list[RowHit] = []
    for chunk in chunked(names, CHUNK):
        pattern = "^(" + "|".join(re.escape(n) for n in chunk) + ")$"
        rows = ch.query(
            f"SELECT {_COLUMNS} FROM merge(REGEXP({{pattern:String}}), {{table:String}})"
            " WHERE event_id = toUUID({id:String})"
            " ORDER BY ingested_at",
            parameters={"pattern": pattern, "table": f"^{EVENTS_TABLE}$", "id": event_id},
        ).result_rows
        for r in rows:
            db = str(r[0])
            hits.append(
                RowHit(
                    database=db,
                    table=EVENTS_TABLE,
                    client_id=databases.get(db),
                    kafka_topic=str(r[1]),
                    kafka_partition=int(r[2]),
                    kafka_offset=int(r[3]),
                    batch_index=int(r[4]),
                    origin_partition=int(r[5]),
                    origin_offset=int(r[6]),
                    attempt=int(r[7]),
                    event_name=str(r[8]),
                    event_timestamp=_utc(r[9]),
                    sent_at=_utc(r[10]) if r[10] is not None else None,
                    received_at=_utc(r[11]),
                    ingested_at=_utc(r[12]),
                    router_instance=str(r[13]),
                    target=target,
                )
            )
    return hits
