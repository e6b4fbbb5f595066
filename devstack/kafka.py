"""Apache Kafka 4.x (KRaft) nodes: one broker+controller, or a cluster of N of them.

Each node runs `java -cp '<jars>/*' kafka.Kafka server.properties` from the Maven-fetched jars
(see kafka_jars.py) with its config, log dir, log file and pid file under `<state>/<name>/`
(names and ports: topology.py). The log dir is formatted once with kafka.tools.StorageTool:
- single node: `format --standalone` (a dynamic quorum of itself), as it always was;
- cluster: the same cluster id on every node and a static quorum
  (`controller.quorum.voters` lists every node), so a node whose dir was wiped rejoins it.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

from confluent_kafka import KafkaException

from analytics_core.settings import Settings

from . import kafka_jars, kafka_topics, process
from .options import Options
from .service import Port, Service, StackError
from .topology import KafkaCluster, KafkaNode

LOG4J2 = """\
status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
# Chatty at INFO; warnings and errors still come through.
logger.raft.name = org.apache.kafka.raft
logger.raft.level = WARN
logger.log.name = kafka.log
logger.log.level = WARN
logger.storage.name = org.apache.kafka.storage
logger.storage.level = WARN
logger.coord.name = org.apache.kafka.coordinator
logger.coord.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.image.name = org.apache.kafka.image
logger.image.level = WARN
logger.metadata.name = org.apache.kafka.metadata
logger.metadata.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.common.name = org.apache.kafka.common
logger.common.level = WARN
logger.cluster.name = kafka.cluster
logger.cluster.level = WARN
logger.group.name = kafka.coordinator
logger.group.level = WARN
"""


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding (as `random-uuid`).

    Kafka never hands out ids that start with '-' (they read as command-line flags) nor the
    all-zero id; neither do we.
    """
    while True:
        raw = secrets.token_bytes(16)
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if any(raw) and not text.startswith("-"):
            return text


class KafkaService(Service):
    """One node of the local Kafka (the only one unless DEVSTACK_KAFKA_BROKERS > 1)."""

    family = "kafka"
    stop_timeout: ClassVar[float] = 45.0
    fatal_patterns: ClassVar[tuple[str, ...]] = (
        # Root causes first: they say what to fix, the exit line after them does not.
        r"failed to bind to \S+: Address already in use",
        r"Failed to acquire lock",
        r"ERROR Exiting Kafka",
        r"Exiting Kafka due to fatal exception",
        r"^Error: ",
        r"Could not find or load main class",
    )

    def __init__(
        self, settings: Settings, options: Options, node: KafkaNode, cluster: KafkaCluster
    ) -> None:
        super().__init__(settings, options)
        self.node = node
        self.cluster = cluster
        self.name = node.name

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def properties_path(self) -> Path:
        return self.dir / "server.properties"

    @property
    def format_record(self) -> Path:
        return self.dir / "formatted.json"

    def address(self) -> str:
        if self.cluster.single:
            return self.settings.kafka.bootstrap_servers
        return f"{self.node.address} (node {self.node.node_id} of {len(self.cluster.nodes)})"

    def ports(self) -> list[Port]:
        return [
            Port(self.node.broker_port, self.node.broker_var),
            Port(self.node.controller_port, "KAFKA_CONTROLLER_PORT"),
        ]

    def markers(self) -> list[str]:
        return ["kafka.Kafka", str(self.properties_path)]

    def preflight(self) -> None:
        if shutil.which("java") is None:
            raise StackError(
                "kafka: `java` not found; install Java 17+ "
                "(apt-get install -y default-jre-headless)"
            )
        kafka_jars.ensure_jars(self.options.kafka_jars_dir)
        other = self._other_size_running()
        if other is not None:
            raise StackError(
                f"{self.name}: a Kafka of another size runs from this state dir ({other}); "
                "stop it first with `python -m devstack down --services kafka` and the "
                "DEVSTACK_KAFKA_BROKERS it was started with"
            )

    def _other_size_running(self) -> str | None:
        """The pid file of a running node of the other layout (single vs cluster), if any."""
        state = self.settings.state_dir
        if self.cluster.single:
            candidates = sorted(state.glob("kafka-*/kafka-*.pid"))
        else:
            candidates = [state / "kafka" / "kafka.pid"]
        for pid_file in candidates:
            pid = process.owned_pid(pid_file, ["kafka.Kafka"])
            if pid is not None:
                return f"pid {pid}, {pid_file}"
        return None

    def _jars(self) -> Path:
        return kafka_jars.ensure_jars(self.options.kafka_jars_dir)

    def _java(self, main: str, *args: str, heap: str = "256m", tool: bool = False) -> list[str]:
        # A short-lived tool starts in half the time with only the C1 compiler and serial GC.
        gc = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"] if tool else ["-XX:+UseG1GC"]
        return [
            "java",
            f"-Xmx{heap}",
            *gc,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            f"{self._jars()}/*",
            main,
            *args,
        ]

    def _write_config(self) -> None:
        node, cluster = self.node, self.cluster
        port, cport = node.broker_port, node.controller_port
        rf, isr = str(cluster.replication_factor), str(cluster.min_insync_replicas)
        quorum = (
            {"controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}"}
            if cluster.single
            else {"controller.quorum.voters": cluster.voters}
        )
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            **quorum,
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            # Every topic, the internal ones included, survives one broker's loss in a cluster.
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "unclean.leader.election.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        self.properties_path.write_text("# written by devstack on every start\n" + text)
        (self.dir / "log4j2.properties").write_text(LOG4J2)

    def _read_record(self, path: Path) -> dict[str, object]:
        try:
            record = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def _format_once(self) -> None:
        """Format the log dir unless it is; a formatted dir must match today's quorum."""
        cport = self.node.controller_port
        quorum: dict[str, object] = (
            {"controller_port": cport} if self.cluster.single else {"voters": self.cluster.voters}
        )
        if (self.data_dir / "meta.properties").exists():
            record = self._read_record(self.format_record)
            for key, now in quorum.items():
                then = record.get(key, now)
                if then != now:
                    raise self.fail(
                        f"the log dir was formatted for {key} {then}, the settings now give "
                        f"{now}; run `python -m devstack reset --services kafka` (drops Kafka "
                        "data) or set the ports back",
                        with_log=False,
                    )
            return
        shutil.rmtree(self.data_dir, ignore_errors=True)
        cluster_id = new_cluster_id() if self.cluster.single else self._shared_cluster_id()
        extra = ["--standalone"] if self.cluster.single else []
        self._tool("format", "-t", cluster_id, "-c", str(self.properties_path), *extra)
        self.format_record.write_text(json.dumps({"cluster_id": cluster_id, **quorum}))

    def _shared_cluster_id(self) -> str:
        """The one id every node of this cluster is formatted with (nodes start in parallel).

        Kept in <state>/kafka-cluster.json next to the voters it belongs to, so a node whose
        dir was wiped rejoins with the same id; other voters (ports moved) get a new one.
        """
        path = self.settings.state_dir / "kafka-cluster.json"
        with process.file_lock(self.settings.state_dir / ".kafka-cluster.lock"):
            record = self._read_record(path)
            if record.get("voters") == self.cluster.voters and record.get("cluster_id"):
                return str(record["cluster_id"])
            cluster_id = new_cluster_id()
            path.write_text(json.dumps({"cluster_id": cluster_id, "voters": self.cluster.voters}))
            return cluster_id

    def _tool(self, *args: str) -> str:
        argv = self._java("kafka.tools.StorageTool", *args, tool=True)
        proc = subprocess.run(argv, cwd=self.dir, capture_output=True, text=True, timeout=120)
        with open(self.log_path, "a") as fh:
            fh.write(f"$ StorageTool {' '.join(args)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            raise self.fail(f"StorageTool {args[0]} failed (exit {proc.returncode})")
        return proc.stdout

    def launch(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format_once()
        # Three JVMs share small machines: a cluster node gets a smaller heap.
        heap = "512m" if self.cluster.single else "384m"
        argv = self._java("kafka.Kafka", str(self.properties_path), heap=heap)
        pid = process.spawn_detached(argv, log_path=self.log_path, cwd=self.dir)
        process.write_pid(self.pid_path, pid)

    def probe(self) -> str | None:
        host, port = self.node.host, self.node.broker_port
        if not process.port_open(host, port):
            return f"nothing listens on {host}:{port}"
        try:
            admin = kafka_topics.admin_client(self.node.address)
            meta = admin.list_topics(timeout=3)
        except KafkaException as exc:
            return str(exc)
        if not meta.brokers:
            return "no broker in the cluster metadata yet"
        if not self.cluster.single and self.node.node_id not in meta.brokers:
            return f"node {self.node.node_id} not yet registered with the controller quorum"
        return None

    def probe_external(self) -> str | None:
        bootstrap = self.settings.kafka.bootstrap_servers
        try:
            meta = kafka_topics.admin_client(bootstrap).list_topics(timeout=3)
        except KafkaException as exc:
            return str(exc)
        return None if meta.brokers else "no broker in the cluster metadata"

    def after_ready(self) -> None:
        try:
            kafka_topics.ensure_topics(
                self.settings,
                bootstrap_servers=self.cluster.bootstrap_servers,
                replication_factor=self.cluster.replication_factor,
                min_insync_replicas=self.cluster.min_insync_replicas,
                timeout=60,
            )
        except KafkaException as exc:
            raise self.fail(f"could not create the shared topics: {exc}") from None
