"""TLS settings reach the real servers: a private PostgreSQL that refuses plaintext, with a
certificate from a CA made here, is used through POSTGRES_SSLMODE / POSTGRES_SSLROOTCERT by
the operator CLI and by the core's connections (and refused with the wrong CA); a TLS-only
redis-server is used through REDIS_TLS / REDIS_CA_CERT by the router's and the capture
service's Redis clients (and refused in plaintext or with the wrong CA)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis

from analytics_core import pg
from analytics_core.client_cache import redis_client
from analytics_core.settings import REPO_ROOT, Settings
from capture import redis_clients as capture_redis
from devstack import api

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA."""
    d.mkdir(parents=True, exist_ok=True)
    for name in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN=test {name}",
            cwd=d,
        )  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1", cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=d,
    )  # fmt: skip
    return Certs(d / "ca.crt", d / "server.crt", d / "server.key", d / "other-ca.crt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tls_env(settings: Settings, ca: Path, mode: str = "verify-full") -> dict[str, str]:
    return {
        "PIPELINE_STATE_DIR": str(settings.state_dir),
        "POSTGRES_PORT": str(settings.postgres.port),
        "POSTGRES_SSLMODE": mode,
        "POSTGRES_SSLROOTCERT": str(ca),
    }


@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Certs]]:
    """A private PostgreSQL (devstack's, on a free port) with ssl=on and plaintext refused."""
    base = tmp_path_factory.mktemp("tls")
    certs = make_certs(base / "certs")
    plain = Settings.from_env(
        {"PIPELINE_STATE_DIR": str(base / "state"), "POSTGRES_PORT": str(_free_port())}
    )
    api.ensure_up(plain, ["postgres"])
    try:
        conn = pg.connect(plain.postgres)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SHOW data_directory")
            data_dir = Path(str(cur.fetchone()[0]))  # type: ignore[index]
        owner = pwd.getpwuid(data_dir.stat().st_uid)
        for src, name in ((certs.cert, "server.crt"), (certs.key, "server.key")):
            shutil.copy(src, data_dir / name)
            os.chown(data_dir / name, owner.pw_uid, owner.pw_gid)
            os.chmod(data_dir / name, 0o600)
        hba = data_dir / "pg_hba.conf"
        hba.write_text("hostnossl all all 0.0.0.0/0 reject\n" + hba.read_text())
        with conn.cursor() as cur:
            cur.execute("ALTER SYSTEM SET ssl = 'on'")
            cur.execute("SELECT pg_reload_conf()")
        conn.close()
        yield plain, certs
    finally:
        api.reset(plain, ["postgres"])


def test_the_cli_and_the_core_speak_tls_to_postgres_and_verify_the_server(
    tls_postgres: tuple[Settings, Certs],
) -> None:
    plain, certs = tls_postgres
    env = _tls_env(plain, certs.ca)
    out = subprocess.run(
        [sys.executable, "-m", "analytics_core.admin", "migrate-metadata"],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "metadata schema up to date" in out.stdout

    settings = Settings.from_env({**os.environ, **env})
    conn = pg.connect(settings.postgres)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            ssl_on, version = cur.fetchone()  # type: ignore[misc]
            cur.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'clients'"
            )
            assert cur.fetchone() == (1,)
    finally:
        conn.close()
    assert ssl_on is True and str(version).startswith("TLS")


def test_plaintext_is_refused_and_an_unknown_ca_fails_verification(
    tls_postgres: tuple[Settings, Certs],
) -> None:
    plain, certs = tls_postgres
    no_tls = Settings.from_env({**os.environ, **_tls_env(plain, certs.ca, "disable")})
    with pytest.raises(psycopg2.OperationalError, match=r"no encryption|rejects connection"):
        pg.connect(no_tls.postgres).close()
    wrong_ca = Settings.from_env({**os.environ, **_tls_env(plain, certs.other_ca)})
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        pg.connect(wrong_ca.postgres).close()


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Certs]]:
    """A private redis-server that listens with TLS only (no plaintext port)."""
    base = tmp_path_factory.mktemp("tls-redis")
    certs = make_certs(base / "certs")
    port = _free_port()
    proc = subprocess.Popen(
        [
            "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key),
            "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, "redis-server with TLS did not start"
            time.sleep(0.1)
        yield port, certs
    finally:
        proc.terminate()
        proc.wait(10)


def _redis_settings(port: int, **env: str) -> Settings:
    return Settings.from_env({**os.environ, "REDIS_PORT": str(port), **env})


def test_router_and_capture_redis_clients_speak_tls_and_verify_the_server(
    tls_redis: tuple[int, Certs],
) -> None:
    port, certs = tls_redis
    settings = _redis_settings(port, REDIS_TLS="true", REDIS_CA_CERT=str(certs.ca))
    client = redis_client(settings.redis, timeout_s=2.0, retries=0)
    assert client.set("tls-probe", "1") is True
    assert client.get("tls-probe") == b"1"
    assert capture_redis.sync_client(settings.redis).get("tls-probe") == b"1"

    async def via_asyncio() -> Any:
        c = capture_redis.async_client(settings.redis)
        try:
            return await c.get("tls-probe")
        finally:
            await c.aclose()

    assert asyncio.run(via_asyncio()) == b"1"


def test_redis_plaintext_fails_and_an_unknown_ca_fails_verification(
    tls_redis: tuple[int, Certs],
) -> None:
    port, certs = tls_redis
    plain = _redis_settings(port, REDIS_TLS="false")
    with pytest.raises(redis.RedisError):
        redis_client(plain.redis, timeout_s=2.0, retries=0).ping()
    wrong_ca = _redis_settings(port, REDIS_TLS="true", REDIS_CA_CERT=str(certs.other_ca))
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis_client(wrong_ca.redis, timeout_s=2.0, retries=0).ping()
