"""Test support for the Dagster tests on the real local stack: an isolated registry and Dagster
instance, and a sensor driver that does what the sensor daemon does.

`sandbox()` creates two fresh PostgreSQL databases on the configured server (a metadata
registry with the schema applied, and Dagster's storage), points POSTGRES_DB and
DAGSTER_POSTGRES_DB at them for its duration, and loads the repository's dagster.yaml into
a DagsterInstance. Sensors therefore see only the sandbox's clients, so tests can run
repeatedly next to other work on the shared stack. On exit it drops the ClickHouse
database of every sandbox client that it created (never one that was there before, such as
bin/dev's `demo`), then both PostgreSQL databases.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg2.extensions
from confluent_kafka.admin import NewTopic
from dagster import (
    AddDynamicPartitionsRequest,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    RunRequest,
    RunsFilter,
    build_sensor_context,
)
from psycopg2 import sql

from analytics_core import kafka_clients, pg, registry
from analytics_core.clickhouse import drop_database, http_client
from analytics_core.clients import ClientStatus
from analytics_core.connections import Connections, open_connections
from analytics_core.event_contract import hash_api_key
from analytics_core.naming import client_id_problem, database_name_for
from analytics_core.settings import Settings
from analytics_pipeline.dagster_home import dagster_env, prepare
from analytics_pipeline.definitions import make_definitions
from analytics_pipeline.resources import (
    ClickHouseResource,
    PostgresMetadataResource,
    process_settings,
)
from analytics_pipeline.tags import RUN_KEY

SENSOR_NAME_TAG = "dagster/sensor_name"


@dataclass
class Sandbox:
    settings: Settings
    home: Path
    instance: DagsterInstance

    def env(self) -> dict[str, str]:
        """Variables for a subprocess (router, dagster dev) that should use this sandbox."""
        return dagster_env(self.settings, self.home)

    @contextmanager
    def connect(self) -> Iterator[psycopg2.extensions.connection]:
        conn = pg.connect(self.settings.postgres)
        try:
            yield conn
        finally:
            conn.close()

    def add_client(
        self, client_id: str, api_key: str, status: ClientStatus = ClientStatus.PENDING
    ) -> None:
        with self.connect() as conn:
            assert registry.add_client(conn, client_id, hash_api_key(api_key), status=status)

    def client(self, client_id: str) -> registry.ClientRow:
        with self.connect() as conn:
            row = registry.get_client(conn, client_id)
        assert row is not None, client_id
        return row

    def definitions(self, migrations_dir: Path | None = None, **resources: object) -> Definitions:
        """The code location on the sandbox's registry (its resources configured for it:
        resources read the environment once per process, not the sandbox's variables)."""
        pg = self.settings.postgres
        configured: dict[str, object] = {
            "postgres": PostgresMetadataResource(
                dbname=pg.dbname, dagster_dbname=pg.dagster_dbname
            ),
        }
        if migrations_dir is not None:
            configured["clickhouse"] = ClickHouseResource(migrations_dir=str(migrations_dir))
        return make_definitions({**configured, **resources}, settings=self.settings)

    @contextmanager
    def connections(self) -> Iterator[Connections]:
        """The core's connections to the sandbox's registry and the stack."""
        with open_connections(self.settings) as c:
            yield c


def _admin(settings: Settings) -> psycopg2.extensions.connection:
    # The server's maintenance database: always there, never one of the sandbox databases.
    conn = pg.connect(settings.postgres, dbname="postgres")
    conn.autocommit = True
    return conn


def _create_db(settings: Settings, name: str) -> None:
    conn = _admin(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def _drop_db(settings: Settings, name: str) -> None:
    conn = _admin(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        conn.close()


def _clickhouse_databases(settings: Settings) -> set[str]:
    ch = http_client(settings.clickhouse)
    try:
        return {str(row[0]) for row in ch.query("SHOW DATABASES").result_rows}
    finally:
        ch.close()


def _drop_client_databases(settings: Settings, kept: set[str]) -> None:
    """Drop the ClickHouse databases of the sandbox's clients, except those in `kept`
    (there before the sandbox: a sandbox client named like a real one, e.g. `demo`, which
    bin/dev seeds, shares its database name, and that data is not the sandbox's)."""
    conn = pg.connect(settings.postgres)
    try:
        rows = registry.list_clients(conn)
    finally:
        conn.close()
    names = {
        r.ch_database_name or database_name_for(r.client_id)
        for r in rows
        if r.ch_database_name or client_id_problem(r.client_id) is None
    }
    ch = http_client(settings.clickhouse)
    try:
        for name in sorted(names - kept):
            drop_database(ch, name)
    finally:
        ch.close()


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def sandbox(home: Path, prefix: str = "t3") -> Iterator[Sandbox]:
    base = Settings.from_env()
    token = uuid.uuid4().hex[:8]
    meta_db, dagster_db = f"{prefix}_meta_{token}", f"{prefix}_dagster_{token}"
    settings = replace(
        base, postgres=replace(base.postgres, dbname=meta_db, dagster_dbname=dagster_db)
    )
    _create_db(settings, meta_db)
    try:
        _create_db(settings, dagster_db)
        conn = pg.connect(settings.postgres)
        try:
            registry.apply_metadata_schema(conn)
        finally:
            conn.close()
        prepare(home)
        existing = _clickhouse_databases(settings)
        # The code location's settings are read once per process: never under the sandbox's
        # variables (a later test would keep the dropped databases).
        process_settings.cache_clear()
        with _environ(dagster_env(settings, home)):
            instance = DagsterInstance.from_config(str(home))
            try:
                yield Sandbox(settings, home, instance)
            finally:
                instance.dispose()
                process_settings.cache_clear()
                _drop_client_databases(settings, existing)
    finally:
        _drop_db(settings, dagster_db)
        _drop_db(settings, meta_db)


@contextmanager
def private_topics(
    settings: Settings, prefix: str, raw_partitions: int = 1
) -> Iterator[tuple[str, str]]:
    """A raw and a dead-letter topic of the test's own (deleted on exit), so a router it
    starts sees only the test's events and dead-letters nothing of other tests."""
    token = uuid.uuid4().hex[:8]
    raw, dead = f"{prefix}_raw_{token}", f"{prefix}_dead_{token}"
    admin = kafka_clients.admin(settings.kafka)
    topics = [NewTopic(raw, raw_partitions, 1), NewTopic(dead, 1, 1)]
    for future in admin.create_topics(topics).values():
        future.result(30)
    try:
        yield raw, dead
    finally:
        for future in admin.delete_topics([raw, dead]).values():
            future.result(30)


@dataclass(frozen=True)
class Tick:
    run_requests: list[RunRequest]
    cursor: str | None
    skip_message: str | None


def tick(sb: Sandbox, defs: Definitions, sensor_name: str, cursor: str | None) -> Tick:
    """Evaluate a sensor once and apply its partition requests, as the sensor daemon does."""
    sensor_def = defs.get_repository_def().get_sensor_def(sensor_name)
    context = build_sensor_context(
        instance=sb.instance,
        # The daemon's contexts carry the ref; partition keys are resolved through it.
        instance_ref=sb.instance.get_ref(),
        cursor=cursor,
        definitions=defs,
        sensor_name=sensor_name,
        resources=defs.resources,
    )
    data = sensor_def.evaluate_tick(context)
    for request in data.dynamic_partitions_requests or []:
        if isinstance(request, AddDynamicPartitionsRequest):
            sb.instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                sb.instance.delete_dynamic_partition(request.partitions_def_name, key)
    return Tick(list(data.run_requests or []), data.cursor, data.skip_message)


def launch(
    sb: Sandbox, defs: Definitions, sensor_name: str, request: RunRequest
) -> ExecuteInProcessResult | None:
    """Execute a sensor's run request in process, tagged as the daemon tags it.

    Like the daemon, a run key that already has a run is not launched again (returns None).
    """
    if request.run_key and sb.instance.get_runs(
        filters=RunsFilter(tags={RUN_KEY: request.run_key})
    ):
        return None
    job_name = request.job_name or defs.get_repository_def().get_sensor_def(sensor_name).job_name
    assert job_name is not None, f"sensor {sensor_name} targets no job"
    job = defs.resolve_job_def(job_name)
    tags = {**request.tags, SENSOR_NAME_TAG: sensor_name}
    if request.run_key:
        tags[RUN_KEY] = request.run_key
    return job.execute_in_process(
        instance=sb.instance,
        partition_key=request.partition_key,
        tags=tags,
        run_config=request.run_config or None,
        raise_on_error=False,
    )
