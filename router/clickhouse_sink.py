"""One INSERT per client batch into `<database>.events_base` (I/O).

Outcomes are values: Inserted, Outage (ClickHouse unreachable or overloaded:
retry everything later, never dead-letter) or Rejected (this client's database
refused the rows: retry this batch with backoff, other clients keep flowing).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from analytics_core.clickhouse import http_client
from analytics_core.events_table import EVENT_COLUMNS, EVENTS_TABLE, EventKey, stored_keys_query
from analytics_core.naming import InvalidIdentifier, quote_identifier
from analytics_core.ops_schema import CONSUMPTION_TABLE
from analytics_core.settings import ClickHouseSettings
from router.accounting import RangeRow
from router.buffers import Batch
from router.rows import INSERT_SETTINGS, ROW_FORMAT, insert_body

ACCOUNTING_COLUMNS = (
    "topic",
    "partition",
    "first_offset",
    "next_offset",
    "messages",
    "events",
    "counts",
    "router_instance",
    "consumer_group",
)
# Server codes that mean "the server is busy or going away", not "this database is broken".
OUTAGE_CODES = frozenset({3, 159, 160, 164, 202, 209, 210, 241, 252, 394, 425, 999, 1000})


@dataclass(frozen=True)
class Inserted:
    rows: int
    seconds: float


@dataclass(frozen=True)
class Outage:
    detail: str


@dataclass(frozen=True)
class Rejected:
    code: int | None
    detail: str


InsertOutcome = Inserted | Outage | Rejected


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0][:500] if text else type(exc).__name__


class ClickHouseSink:
    def __init__(self, settings: ClickHouseSettings, instance: str, *, timeout_s: int = 30) -> None:
        self._settings = settings
        self._instance = instance
        self._timeout_s = timeout_s
        self._client: Client | None = None

    def _get(self) -> Client:
        if self._client is None:
            self._client = http_client(self._settings, timeout_s=self._timeout_s)
        return self._client

    def _failed(self, exc: Exception) -> Outage | Rejected:
        """Classify a failed request; an outage also drops the connection."""
        code = getattr(exc, "code", None) if isinstance(exc, ClickHouseError) else None
        if isinstance(exc, OSError) or code is None or code in OUTAGE_CODES:
            self._reset()
            return Outage(f"{type(exc).__name__}: {_first_line(exc)}")
        return Rejected(code, _first_line(exc))

    def insert(self, batch: Batch, ingested_ms: int) -> InsertOutcome:
        started = time.perf_counter()
        try:
            table = f"{quote_identifier(batch.database)}.{EVENTS_TABLE}"
        except InvalidIdentifier as exc:
            # A registry row naming no usable database: that client's batch is refused
            # (and dead-lettered in the end), never the router stopped.
            return Rejected(None, f"client database name: {exc}")
        try:
            client = self._get()
            client.raw_insert(
                table,
                EVENT_COLUMNS,
                # Streamed (chunked), a compressed group of rows at a time.
                insert_block=insert_body(batch.rows.line_groups(), ingested_ms, self._instance),
                fmt=ROW_FORMAT,
                settings={**INSERT_SETTINGS, "insert_deduplication_token": batch.token},
            )
        except (ClickHouseError, OSError) as exc:
            return self._failed(exc)
        return Inserted(len(batch.rows), time.perf_counter() - started)

    def insert_accounting(
        self, database: str, rows: list[RangeRow], instance: str, group: str
    ) -> InsertOutcome:
        """Write accounting range rows (router.accounting) into the ops database."""
        started = time.perf_counter()
        block = b"\n".join(
            orjson.dumps(
                {
                    "topic": r.topic,
                    "partition": r.partition,
                    "first_offset": r.first_offset,
                    "next_offset": r.next_offset,
                    "messages": r.messages,
                    "events": r.events,
                    "counts": r.counts,
                    "router_instance": instance,
                    "consumer_group": group,
                }
            )
            for r in rows
        )
        spec = group + "|" + "|".join(r.token() for r in rows)
        token = hashlib.sha256(spec.encode()).hexdigest()
        try:
            self._get().raw_insert(
                f"{quote_identifier(database)}.{CONSUMPTION_TABLE}",
                ACCOUNTING_COLUMNS,
                insert_block=block,
                fmt="JSONEachRow",
                settings={"async_insert": 0, "insert_deduplication_token": token},
            )
        except (ClickHouseError, OSError) as exc:
            return self._failed(exc)
        return Inserted(len(rows), time.perf_counter() - started)

    def existing_rows(
        self, database: str, topic: str, partition: int, lo: int, hi: int
    ) -> set[tuple[int, int, int]] | Outage:
        """(partition, offset, batch_index) of rows already stored for an offset range."""
        try:
            result = self._get().query(
                f"SELECT kafka_partition, kafka_offset, batch_index"
                f" FROM {quote_identifier(database)}.{EVENTS_TABLE}"
                " WHERE kafka_topic = {t:String} AND kafka_partition = {p:UInt32}"
                " AND kafka_offset BETWEEN {lo:UInt64} AND {hi:UInt64}",
                parameters={"t": topic, "p": partition, "lo": lo, "hi": hi},
            )
        except (ClickHouseError, OSError) as exc:
            failed = self._failed(exc)
            # Rejected: database or table missing, so nothing is stored; the INSERT says why.
            return failed if isinstance(failed, Outage) else set()
        return {(int(p), int(o), int(b)) for p, o, b in result.result_rows}

    def stored_identities(self, database: str, wanted: set[EventKey]) -> set[EventKey] | Outage:
        """Which of `wanted` events are stored already. The conditions follow the table's
        sort key (day, name, id), so the primary index keeps the query small."""
        if not wanted:
            return set()
        try:
            sql, params = stored_keys_query(database, wanted)
            result = self._get().query(sql, parameters=params)
        except (ClickHouseError, OSError) as exc:
            failed = self._failed(exc)
            return failed if isinstance(failed, Outage) else set()
        found = {EventKey(str(i), str(n), d) for i, n, d in result.result_rows}
        return found & wanted

    def ping(self) -> bool:
        try:
            return bool(self._get().ping())
        except (ClickHouseError, OSError):
            self._reset()
            return False

    def _reset(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def close(self) -> None:
        self._reset()
