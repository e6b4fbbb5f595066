"""A single-node Apache Kafka 4.x broker+controller (KRaft) under <state>/kafka.

Runs `java -cp '<jars>/*' kafka.Kafka server.properties` from the Maven-fetched jars
(see kafka_jars.py). The log dir is formatted once with kafka.tools.StorageTool
(`random-uuid`, then `format --standalone`, a dynamic controller quorum).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

from confluent_kafka import KafkaException

from analytics_core.settings import Settings

from . import kafka_jars, kafka_topics, process
from .service import Port, Service, StackError

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


def broker_port(settings: Settings) -> int:
    """The port of the first bootstrap server (the local broker listens there)."""
    first = settings.kafka.bootstrap_servers.split(",")[0].strip()
    host_port = first.rsplit("://", 1)[-1]
    try:
        return int(host_port.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise StackError(
            f"kafka: KAFKA_BOOTSTRAP_SERVERS={settings.kafka.bootstrap_servers!r} has no port"
        ) from None


class KafkaService(Service):
    name = "kafka"
    stop_timeout: ClassVar[float] = 45.0
    fatal_patterns: ClassVar[tuple[str, ...]] = (
        r"ERROR Exiting Kafka",
        r"Exiting Kafka due to fatal exception",
        r"^Error: ",
        r"Could not find or load main class",
        r"Failed to acquire lock",
    )

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
        return self.settings.kafka.bootstrap_servers

    def ports(self) -> list[Port]:
        return [
            Port(broker_port(self.settings), "KAFKA_BOOTSTRAP_SERVERS"),
            Port(self.settings.kafka.controller_port, "KAFKA_CONTROLLER_PORT"),
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

    def _jars(self) -> Path:
        return kafka_jars.ensure_jars(self.options.kafka_jars_dir)

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        return [
            "java",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            f"{self._jars()}/*",
            main,
            *args,
        ]

    def _write_config(self) -> None:
        port = broker_port(self.settings)
        cport = self.settings.kafka.controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        self.properties_path.write_text("# written by devstack on every start\n" + text)
        (self.dir / "log4j2.properties").write_text(LOG4J2)

    def _format_once(self) -> None:
        cport = self.settings.kafka.controller_port
        if (self.data_dir / "meta.properties").exists():
            try:
                record = json.loads(self.format_record.read_text())
            except (FileNotFoundError, ValueError):
                record = {}
            formatted_port = record.get("controller_port", cport)
            if formatted_port != cport:
                raise self.fail(
                    f"the log dir was formatted for controller port {formatted_port}, "
                    f"KAFKA_CONTROLLER_PORT is now {cport}; run `python -m devstack reset "
                    f"--services kafka` (drops Kafka data) or set it back",
                    with_log=False,
                )
            return
        shutil.rmtree(self.data_dir, ignore_errors=True)
        uuid = self._tool("random-uuid").strip().splitlines()[-1]
        self._tool("format", "-t", uuid, "-c", str(self.properties_path), "--standalone")
        self.format_record.write_text(json.dumps({"cluster_id": uuid, "controller_port": cport}))

    def _tool(self, *args: str) -> str:
        argv = self._java("kafka.tools.StorageTool", *args)
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
        argv = self._java("kafka.Kafka", str(self.properties_path), heap="512m")
        pid = process.spawn_detached(argv, log_path=self.log_path, cwd=self.dir)
        process.write_pid(self.pid_path, pid)

    def probe(self) -> str | None:
        port = broker_port(self.settings)
        host = self.settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[0]
        host = host.rsplit("://", 1)[-1] or "127.0.0.1"
        if not process.port_open(host, port):
            return f"nothing listens on {host}:{port}"
        try:
            admin = kafka_topics.admin_client(self.settings.kafka.bootstrap_servers)
            meta = admin.list_topics(timeout=3)
        except KafkaException as exc:
            return str(exc)
        if not meta.brokers:
            return "no broker in the cluster metadata yet"
        return None

    def after_ready(self) -> None:
        try:
            kafka_topics.ensure_topics(self.settings, timeout=60)
        except KafkaException as exc:
            raise self.fail(f"could not create the shared topics: {exc}") from None
