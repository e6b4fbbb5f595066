"""Drive deploy/local/docker-compose.yml on the private engine, as the compose test does.

The stack runs the repository's compose files unchanged (plus tests/deploy/compose.test.yml)
with the locally built images swapped in through the image variables, random loopback
ports, and an environment built from scratch: the developer's own POSTGRES_PORT & co. must
not leak into the stack, since compose gives shell variables precedence over .env.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from analytics_core.settings import REPO_ROOT, Settings

from .engine import DockerEngine, EngineError
from .local_images import Built

LOCAL = REPO_ROOT / "deploy" / "local"
COMPOSE_FILES = (
    LOCAL / "docker-compose.yml",
    LOCAL / "docker-compose.bundled.yml",
    REPO_ROOT / "tests" / "deploy" / "compose.test.yml",
)
IMAGE_VARIABLES = {
    "APP_IMAGE": "app",
    "KAFKA_IMAGE": "kafka",
    "CLICKHOUSE_IMAGE": "clickhouse",
    "POSTGRES_IMAGE": "postgres",
    "REDIS_IMAGE": "redis",
    "PROMETHEUS_IMAGE": "prometheus",
    "ALERTMANAGER_IMAGE": "alertmanager",
}
# Grafana cannot be pulled or built here (see deploy/README.md): every other service runs.
SERVICES = (
    "kafka", "kafka-init", "redis", "postgres", "clickhouse", "init", "router", "capture",
    "code-location", "dagster-webserver", "dagster-daemon", "prometheus", "alertmanager",
    "alert-receiver",
)  # fmt: skip


@dataclass(frozen=True)
class Ports:
    kafka: int
    postgres: int
    clickhouse: int
    dagster: int
    prometheus: int
    alertmanager: int
    receiver: int
    capture: int


@dataclass
class ComposeStack:
    engine: DockerEngine
    project: str
    images: dict[str, Built]
    ports: Ports
    bridge: str
    # Fixed for the stack's life: compose recreates containers whose configuration changed.
    postgres_password: str = field(default_factory=lambda: secrets.token_hex(12))
    replay_key: str = field(default_factory=lambda: secrets.token_hex(24))
    grafana_password: str = field(default_factory=lambda: secrets.token_hex(8))

    def env(self) -> dict[str, str]:
        base = self.engine.env()
        keep = ("PATH", "HOME", "LANG", "DOCKER_HOST")
        env: dict[str, str] = {k: base[k] for k in keep if k in base}
        env.update({var: self.images[name].tag for var, name in IMAGE_VARIABLES.items()})
        env.update(
            COMPOSE_PROJECT_NAME=self.project,
            COMPOSE_FILE=":".join(str(f) for f in COMPOSE_FILES),
            COMPOSE_PROFILES="bundled",
            COMPOSE_HTTP_TIMEOUT="300",
            DOCKER_CLIENT_TIMEOUT="300",
            POSTGRES_PASSWORD=self.postgres_password,
            PIPELINE_REPLAY_KEY=self.replay_key,
            GRAFANA_ADMIN_PASSWORD=self.grafana_password,
            # The chdb test image serves user `default` without a password.
            CLICKHOUSE_PASSWORD="",
            KAFKA_TOPIC_PARTITIONS="6",
            KAFKA_HEAP_OPTS="-Xmx384m -Xms384m",
            KAFKA_EXTERNAL_PORT=str(self.ports.kafka),
            POSTGRES_PUBLISH_PORT=str(self.ports.postgres),
            CLICKHOUSE_PUBLISH_PORT=str(self.ports.clickhouse),
            DAGSTER_PORT=str(self.ports.dagster),
            PROMETHEUS_PORT=str(self.ports.prometheus),
            ALERTMANAGER_PORT=str(self.ports.alertmanager),
            ALERT_RECEIVER_PORT=str(self.ports.receiver),
            CAPTURE_PUBLISH_PORT=str(self.ports.capture),
            ALERT_RECEIVER_SCRIPT=str(REPO_ROOT / "tests" / "deploy" / "alert_receiver.py"),
            ALERTMANAGER_WEBHOOK_URL="http://alert-receiver:8080/alerts",
            TEST_BRIDGE_NAME=self.bridge,
            ROUTER_MAX_BUFFERED_MB="256",
        )
        return env

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        proc = subprocess.run(
            ["docker-compose", "--ansi", "never", *args],
            env=self.env(),
            cwd=LOCAL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-60:])
            raise EngineError(f"docker-compose {' '.join(args)} failed:\n{tail}")
        return proc.stdout + proc.stderr

    def container_ids(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service, check=False)
        return [line for line in out.split() if len(line) == 64]

    def health(self, service: str) -> list[str]:
        """Docker's view of each container of `service`: 'healthy', 'starting', 'exited'..."""
        states = []
        for cid in self.container_ids(service):
            fmt = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"
            out = self.engine.docker("inspect", "-f", fmt, cid, check=False).split()
            states.append(out[-1] if out else "gone")
        return states

    def settings(self) -> Settings:
        """Settings that reach the stack through its published ports only."""
        return Settings.from_env(
            {
                "POSTGRES_HOST": "127.0.0.1",
                "POSTGRES_PORT": str(self.ports.postgres),
                "POSTGRES_PASSWORD": self.postgres_password,
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.ports.kafka}",
                "KAFKA_TOPIC_PARTITIONS": "6",
                "CLICKHOUSE_HOST": "127.0.0.1",
                "CLICKHOUSE_HTTP_PORT": str(self.ports.clickhouse),
            }
        )

    def memory_mib(self) -> dict[str, float]:
        """Resident memory of every running container (cgroup usage less page cache)."""
        out = self.engine.docker(
            "stats", "--no-stream", "--format", "{{json .}}", *self.all_container_ids()
        )
        usage: dict[str, float] = {}
        for line in out.splitlines():
            row = json.loads(line)
            used = row["MemUsage"].split("/")[0].strip()
            usage[row["Name"]] = _to_mib(used)
        return usage

    def all_container_ids(self) -> list[str]:
        out = self.engine.docker(
            "ps", "-q", "--no-trunc", "--filter", f"label=com.docker.compose.project={self.project}"
        )
        return out.split()

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False)


def _to_mib(text: str) -> float:
    units = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "kB": 1e3 / 2**20,
             "MB": 1e6 / 2**20, "GB": 1e9 / 2**20}  # fmt: skip
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return 0.0


def image_sizes_mib(engine: DockerEngine, images: dict[str, Built]) -> dict[str, float]:
    sizes = {}
    for name, built in images.items():
        out = engine.docker("image", "inspect", "-f", "{{.Size}}", built.tag).strip()
        sizes[name] = int(out) / 2**20
    return sizes


def write_report(path: Path, report: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
