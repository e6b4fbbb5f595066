"""Which Kafka nodes and ClickHouse servers devstack runs, and on which ports (pure, no I/O).

Kafka, `DEVSTACK_KAFKA_BROKERS=N` (1, 3 or 5):
- N = 1 is the single broker+controller named `kafka` (dir `<state>/kafka`), as always.
- N > 1 runs nodes `kafka-1` .. `kafka-N` (dirs `<state>/kafka-<k>`), each a broker and a
  KRaft controller; the N controllers form one static voter quorum.
- Node k's broker port: the k-th address of KAFKA_BOOTSTRAP_SERVERS when it lists N of them,
  else the first address's port + 2(k-1). Its controller port: KAFKA_CONTROLLER_PORT + 2(k-1).
  (The defaults 29192/29193 thus give 29192..29197, brokers and controllers interleaved.)
- Topics get replication factor min(N, 3) and min.insync.replicas one less (at least 1): with
  acks=all a write survives the loss of any one broker, and one broker may be down.

ClickHouse, `DEVSTACK_CLICKHOUSE_SERVERS=M` (1..4):
- Server 1 is the target `default` (the CLICKHOUSE_* variables), named `clickhouse`.
- Server k > 1 is the target `ch<k>`, named `clickhouse-ch<k>` (dir `<state>/clickhouse-ch<k>`),
  on CLICKHOUSE_CH<k>_HTTP_PORT / _NATIVE_PORT, by default the default's ports + (k-1).

Invariant checked here: no two local servers share a port (the message names both).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from analytics_core.settings import DEFAULT_TARGET, Settings, clickhouse_prefix

from .options import Options, extra_target_names
from .service import StackError

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    name: str  # "kafka" for the single broker, "kafka-<k>" in a cluster
    host: str
    broker_port: int
    controller_port: int
    broker_var: str  # the variable that moves the broker port (for error messages)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.broker_port}"


@dataclass(frozen=True)
class KafkaCluster:
    nodes: tuple[KafkaNode, ...]

    @property
    def single(self) -> bool:
        return len(self.nodes) == 1

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def voters(self) -> str:
        """controller.quorum.voters: every node's id and controller endpoint."""
        return ",".join(f"{n.node_id}@{LOOPBACK}:{n.controller_port}" for n in self.nodes)

    @property
    def replication_factor(self) -> int:
        return min(3, len(self.nodes))

    @property
    def min_insync_replicas(self) -> int:
        return max(1, self.replication_factor - 1)


@dataclass(frozen=True)
class ClickHouseServer:
    target: str  # "default" or "ch<k>": the name the pipeline's CLICKHOUSE_TARGETS use
    name: str  # "clickhouse" or "clickhouse-ch<k>": the devstack service instance
    host: str
    http_port: int
    native_port: int
    user: str
    password: str = field(repr=False)
    secure: bool

    @property
    def env_prefix(self) -> str:
        """CLICKHOUSE_ for the default target, CLICKHOUSE_<NAME>_ for the others."""
        return f"{clickhouse_prefix(self.target)}_"


@dataclass(frozen=True)
class Topology:
    kafka: KafkaCluster
    clickhouse: tuple[ClickHouseServer, ...]

    @property
    def extra_targets(self) -> tuple[ClickHouseServer, ...]:
        return tuple(s for s in self.clickhouse if s.target != DEFAULT_TARGET)


def parse_bootstrap(raw: str) -> list[tuple[str, int]]:
    """`host:port,host:port` (an optional `PLAINTEXT://` prefix each) as (host, port) pairs."""
    out: list[tuple[str, int]] = []
    for item in raw.split(","):
        entry = item.strip().rsplit("://", 1)[-1]
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise StackError(
                f"kafka: KAFKA_BOOTSTRAP_SERVERS={raw!r}: {item.strip()!r} has no valid port"
            )
        out.append((host or LOOPBACK, int(port)))
    if not out:
        raise StackError("kafka: KAFKA_BOOTSTRAP_SERVERS is empty")
    return out


def plan_kafka(settings: Settings, brokers: int, *, local: bool) -> KafkaCluster:
    """The nodes for `brokers`; `local` False (external Kafka) skips the size checks."""
    listed = parse_bootstrap(settings.kafka.bootstrap_servers)
    cport = settings.kafka.controller_port
    if brokers == 1 or not local:
        host, port = listed[0]
        if local and len(listed) > 1:
            raise StackError(
                f"kafka: KAFKA_BOOTSTRAP_SERVERS lists {len(listed)} brokers but "
                "DEVSTACK_KAFKA_BROKERS is 1; set DEVSTACK_KAFKA_BROKERS to that count, "
                "or list only the first broker"
            )
        node = KafkaNode(1, "kafka", host, port, cport, "KAFKA_BOOTSTRAP_SERVERS")
        return KafkaCluster((node,))
    if len(listed) not in (1, brokers):
        raise StackError(
            f"kafka: KAFKA_BOOTSTRAP_SERVERS lists {len(listed)} brokers but "
            f"DEVSTACK_KAFKA_BROKERS is {brokers}; list one (the others follow at +2 ports) "
            f"or all {brokers}"
        )
    host, first = listed[0]
    nodes = []
    for k in range(1, brokers + 1):
        h, port = listed[k - 1] if len(listed) == brokers else (host, first + 2 * (k - 1))
        nodes.append(
            KafkaNode(k, f"kafka-{k}", h, port, cport + 2 * (k - 1), "KAFKA_BOOTSTRAP_SERVERS")
        )
    return KafkaCluster(tuple(nodes))


def plan_clickhouse(settings: Settings, options: Options) -> tuple[ClickHouseServer, ...]:
    ch = settings.clickhouse
    servers = [
        ClickHouseServer(
            DEFAULT_TARGET,
            "clickhouse",
            ch.host,
            ch.http_port,
            ch.native_port,
            ch.user,
            ch.password,
            ch.secure,
        )
    ]
    for k, target in enumerate(extra_target_names(options.clickhouse_servers), start=2):
        given = options.target_ports.get(target)
        http = given.http_port if given and given.http_port else ch.http_port + k - 1
        native = given.native_port if given and given.native_port else ch.native_port + k - 1
        # devstack's servers are chdb-core on loopback: user `default`, no password, no TLS.
        name = f"clickhouse-{target}"
        servers.append(ClickHouseServer(target, name, LOOPBACK, http, native, "default", "", False))
    return tuple(servers)


def plan(settings: Settings, options: Options, local: Collection[str]) -> Topology:
    """The topology for these settings; `local` names the services devstack runs here.

    Raises StackError when the Kafka addresses do not fit the node count, or when two local
    servers would share a port.
    """
    topo = Topology(
        kafka=plan_kafka(settings, options.kafka_brokers, local="kafka" in local),
        clickhouse=plan_clickhouse(settings, options),
    )
    _check_distinct_ports(settings, topo, local)
    return topo


def _check_distinct_ports(settings: Settings, topo: Topology, local: Collection[str]) -> None:
    owners: list[tuple[int, str]] = []
    if "postgres" in local:
        owners.append((settings.postgres.port, "postgres (POSTGRES_PORT)"))
    if "redis" in local:
        owners.append((settings.redis.port, "redis (REDIS_PORT)"))
    if "kafka" in local:
        for n in topo.kafka.nodes:
            owners.append((n.broker_port, f"{n.name} broker ({n.broker_var})"))
            owners.append((n.controller_port, f"{n.name} controller (KAFKA_CONTROLLER_PORT)"))
    if "clickhouse" in local:
        for s in topo.clickhouse:
            owners.append((s.http_port, f"{s.name} HTTP ({s.env_prefix}HTTP_PORT)"))
            owners.append((s.native_port, f"{s.name} native ({s.env_prefix}NATIVE_PORT)"))
    seen: dict[int, str] = {}
    for port, owner in owners:
        if port in seen:
            raise StackError(f"port {port} is given to both {seen[port]} and {owner}; move one")
        seen[port] = owner
