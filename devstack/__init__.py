"""devstack: the local stack (PostgreSQL, Redis, Kafka KRaft, ClickHouse) without Docker.

Every server runs as an ordinary process on 127.0.0.1 with its data, log file and pid file
under `<state_dir>/<service>/` (state dir: $PIPELINE_STATE_DIR, default `<repo>/.state`).
Ports and hosts come from `analytics_core.settings.Settings.from_env()`, the same variables
the application reads.

    python -m devstack up [--services pg,redis,kafka,clickhouse]   # idempotent, waits for health
    python -m devstack status | logs SERVICE | down [--wipe] | reset
    eval "$(python -m devstack env)"     # point this shell at the topology (all brokers, targets)

Python: `devstack.api.ensure_up(settings)`, `stop`, `status`, `start_service`, `stop_service`.

Using your own servers: set `DEVSTACK_SERVICES` to the comma list of services devstack should
run locally (default: all four: postgres,redis,kafka,clickhouse; aliases pg, ch), e.g.
`DEVSTACK_SERVICES=pg,redis` with `KAFKA_BOOTSTRAP_SERVERS=...` and `CLICKHOUSE_HOST=...`
pointing at external Kafka and ClickHouse. Services left out are never started or stopped;
`status` still probes them at the configured address.

Topology (topology.py has the port rules):
  DEVSTACK_KAFKA_BROKERS       1 (default), 3 or 5 KRaft nodes kafka-1..N, each a broker and a
                               controller; topics get replication factor 3, min.insync.replicas 2
  DEVSTACK_CLICKHOUSE_SERVERS  1 (default) to 4 ClickHouse servers: the default target, then
                               ch2 (clickhouse-ch2), ... on CLICKHOUSE_CH2_HTTP_PORT/_NATIVE_PORT
`--services`, `logs` and `start_service`/`stop_service` also take one server (kafka-2).

Other knobs:
  DEVSTACK_START_TIMEOUT  seconds to wait for the services to answer (default 90)
  KAFKA_JARS_DIR          Kafka jar cache (default ~/.cache/analytics-pipeline/kafka-<version>,
                          fetched once with Maven from devstack/kafka/pom.xml)
  DEVSTACK_PG_OS_USER     OS user that owns the PostgreSQL cluster when run as root
                          (default postgres; PostgreSQL refuses to run as root)
  DEVSTACK_PG_BIN         directory with initdb/pg_ctl (default: newest /usr/lib/postgresql/*/bin)

Local server specifics: PostgreSQL uses trust auth on loopback and gets the role
$POSTGRES_USER (superuser) and the databases $POSTGRES_DB and $DAGSTER_POSTGRES_DB; Redis keeps
an append-only file; Kafka creates the raw and dead-letter topics with $KAFKA_TOPIC_PARTITIONS
partitions (auto-create is off); ClickHouse (chdb-core 26.9) has only user `default`, no password.
"""
