"""A local redis-server under <state>/redis with append-only persistence (data survives down/up)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import ClassVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .service import Port, Service, StackError


class RedisService(Service):
    name = "redis"
    family = "redis"
    fatal_patterns: ClassVar[tuple[str, ...]] = (
        r"aborting",
        r"Fatal error",
        r"FATAL",
        r"Can't open",
        r"Bad directive",
    )

    def address(self) -> str:
        return f"{self.settings.redis.host}:{self.settings.redis.port}"

    def ports(self) -> list[Port]:
        return [Port(self.settings.redis.port, "REDIS_PORT")]

    def markers(self) -> list[str]:
        # redis-server rewrites its title to "redis-server 127.0.0.1:<port>".
        return ["redis-server", f":{self.settings.redis.port}"]

    def preflight(self) -> None:
        if shutil.which("redis-server") is None:
            raise StackError("redis: redis-server not found; apt-get install -y redis-server")

    def launch(self) -> None:
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "redis.conf"
        lines = [
            f"port {self.settings.redis.port}",
            "bind 127.0.0.1",
            f'dir "{data}"',
            "daemonize yes",
            f'pidfile "{self.pid_path}"',
            f'logfile "{self.log_path}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "protected-mode yes",
        ]
        if self.settings.redis.password:
            lines.append(f'requirepass "{self.settings.redis.password}"')
        # The password lives in a 0600 file, never on the command line.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        proc = subprocess.run(
            ["redis-server", str(conf)],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=30,
            start_new_session=True,
        )
        if proc.returncode != 0:
            raise self.fail(f"redis-server exited {proc.returncode}: {proc.stderr.strip()}")

    def probe(self) -> str | None:
        r = self.settings.redis
        client = redis.Redis(
            host=r.host,
            port=r.port,
            password=r.password or None,
            socket_connect_timeout=1,
            socket_timeout=2,
            retry=Retry(NoBackoff(), 0),  # a probe answers now; the caller polls
        )
        try:
            client.ping()
        except redis.RedisError as exc:
            return str(exc) or type(exc).__name__
        finally:
            client.close()
        return None
