"""A private PostgreSQL cluster under <state>/postgres (initdb + pg_ctl, trust auth on loopback).

PostgreSQL refuses to run as root: when devstack runs as root, the cluster belongs to the OS
user `postgres` (override with DEVSTACK_PG_OS_USER) and every server command runs through
`runuser -u <user> --`. When that user cannot reach the state dir (a parent without o+x,
e.g. /root or pytest's temp dirs), the cluster is kept in /var/tmp/devstack-postgres-<hash>/
and <state>/postgres is a symlink to it (`reset` removes both).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path
from typing import ClassVar

import psycopg2
from psycopg2 import sql

from . import process
from .service import Port, Service, StackError

log = logging.getLogger("devstack")

BOOTSTRAP_SUPERUSER = "postgres"
# Where the cluster goes when the OS user cannot reach the state dir (sticky, world-traversable).
FALLBACK_ROOT = Path("/var/tmp")
# Unix socket paths are limited to 107 bytes; beyond that the cluster listens on TCP only.
_MAX_SOCKET_PATH = 100


def find_bin_dir(override: str) -> Path:
    if override:
        return Path(override)
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted(
            (p for p in root.iterdir() if (p / "bin" / "pg_ctl").exists()),
            key=lambda p: int(p.name) if p.name.isdigit() else 0,
        )
        if versions:
            return versions[-1] / "bin"
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise StackError(
        "postgres: initdb/pg_ctl not found; install them (apt-get install -y postgresql) "
        "or point DEVSTACK_PG_BIN at their directory"
    )


class PostgresService(Service):
    name = "postgres"
    family = "postgres"
    stop_signal: ClassVar[int] = signal.SIGINT  # "fast" shutdown
    stop_timeout: ClassVar[float] = 60.0

    @property
    def home(self) -> Path:
        """<state>/postgres with symlinks resolved: the path the OS user can actually reach."""
        return Path(os.path.realpath(self.dir))

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_path(self) -> Path:
        return self.home / "postgres.log"

    def address(self) -> str:
        return f"{self.settings.postgres.host}:{self.settings.postgres.port}"

    def ports(self) -> list[Port]:
        return [Port(self.settings.postgres.port, "POSTGRES_PORT")]

    def markers(self) -> list[str]:
        return ["postgres", f"-D {self.data_dir}"]

    # -- running as the right OS user --------------------------------------------------------
    def _os_user(self) -> pwd.struct_passwd | None:
        """The unprivileged user to run as, or None when devstack itself is not root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self.options.pg_os_user)
        except KeyError:
            raise StackError(
                f"postgres: running as root, and PostgreSQL refuses root; the OS user "
                f"{self.options.pg_os_user!r} does not exist (install the postgresql package, "
                f"create it with `useradd --system {self.options.pg_os_user}`, or set "
                f"DEVSTACK_PG_OS_USER)"
            ) from None

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = self._os_user()
        full = ["runuser", "-u", user.pw_name, "--", *argv] if user else argv
        proc = subprocess.run(
            full,
            cwd="/",
            capture_output=True,
            text=True,
            start_new_session=True,
            timeout=self.options.start_timeout + 30,
        )
        if check and proc.returncode != 0:
            out = (proc.stdout + proc.stderr).strip()
            raise self.fail(f"`{' '.join(argv[:2])}` failed (exit {proc.returncode}): {out}")
        return proc

    def preflight(self) -> None:
        bindir = find_bin_dir(self.options.pg_bin_dir)
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not (bindir / tool).exists():
                raise StackError(f"postgres: {bindir / tool} is missing; install postgresql")
        self._os_user()

    def _chown_tree(self, user: pwd.struct_passwd) -> None:
        for root, dirs, files in os.walk(self.home):
            os.chown(root, user.pw_uid, user.pw_gid)
            for name in dirs + files:
                os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)

    def _place_home(self, user: pwd.struct_passwd) -> None:
        """Keep the cluster under <state>/postgres, or, when the unprivileged OS user cannot
        reach the state dir (e.g. a checkout under /root, or pytest's 0700 temp dirs), in
        /var/tmp/devstack-postgres-<hash>/ with <state>/postgres as a symlink to it."""
        if self.dir.is_symlink():
            Path(os.readlink(self.dir)).mkdir(mode=0o700, parents=True, exist_ok=True)
            return
        state = self.settings.state_dir
        state.mkdir(parents=True, exist_ok=True)
        if self._run(["test", "-x", str(state)], check=False).returncode == 0:
            return
        if (self.data_dir / "PG_VERSION").exists():
            return  # an existing cluster: the writability check reports the problem
        digest = hashlib.sha1(str(state.resolve()).encode()).hexdigest()[:12]
        home = FALLBACK_ROOT / f"devstack-postgres-{digest}"
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(home, user.pw_uid, user.pw_gid)
        if self.dir.exists():
            shutil.rmtree(self.dir)  # no cluster in it: only leftovers of a failed start
        self.dir.symlink_to(home, target_is_directory=True)
        log.info(
            "postgres: OS user %s cannot reach %s; the cluster lives in %s (%s links to it)",
            user.pw_name,
            state,
            home,
            self.dir,
        )

    def wipe(self) -> None:
        if self.dir.is_symlink():
            shutil.rmtree(os.readlink(self.dir), ignore_errors=True)
            self.dir.unlink()
            return
        super().wipe()

    def launch(self) -> None:
        bindir = find_bin_dir(self.options.pg_bin_dir)
        user = self._os_user()
        if user is not None:
            self._place_home(user)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self.log_path.touch()
        if user is not None:
            self._chown_tree(user)
            probe = self._run(["test", "-w", str(self.home)], check=False)
            if probe.returncode != 0:
                raise self.fail(
                    f"OS user {user.pw_name!r} cannot write {self.home}: a parent directory is "
                    f"not traversable for it (chmod o+x the parents) or set PIPELINE_STATE_DIR "
                    f"to a path it can reach",
                    with_log=False,
                )
        if not (self.data_dir / "PG_VERSION").exists():
            if self.data_dir.exists():
                shutil.rmtree(self.data_dir)  # a half-done initdb
            self._run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    BOOTSTRAP_SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-instructions",
                ]
            )
            conf = self.data_dir / "postgresql.conf"
            with open(conf, "a") as fh:
                fh.write("\n# devstack: settings that follow the current environment\n")
                fh.write("include_if_exists = 'devstack.conf'\n")
        self._write_conf(user)
        self._run(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(self.options.start_timeout)),
            ]
        )
        pid = self._postmaster_pid()
        if pid is None:
            raise self.fail("pg_ctl reported success but postmaster.pid is missing")
        process.write_pid(self.pid_path, pid)

    def _write_conf(self, user: pwd.struct_passwd | None) -> None:
        socket_path = self.socket_dir / f".s.PGSQL.{self.settings.postgres.port}"
        sockets = str(self.socket_dir) if len(str(socket_path)) <= _MAX_SOCKET_PATH else ""
        lines = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.settings.postgres.port}",
            f"unix_socket_directories = '{sockets}'",
            "max_connections = 200",
            "shared_buffers = 128MB",
            "logging_collector = off",
            "log_line_prefix = '%m [%p] %q%u@%d '",
        ]
        target = self.data_dir / "devstack.conf"
        target.write_text("\n".join(lines) + "\n")
        if user is not None:
            os.chown(target, user.pw_uid, user.pw_gid)

    def _postmaster_pid(self) -> int | None:
        return process.read_pid(self.data_dir / "postmaster.pid")

    def _admin_dsn(self) -> str:
        port = self.settings.postgres.port
        return (
            f"host=127.0.0.1 port={port} dbname=postgres user={BOOTSTRAP_SUPERUSER} "
            "connect_timeout=2"
        )

    def probe(self) -> str | None:
        try:
            conn = psycopg2.connect(self._admin_dsn())
        except psycopg2.Error as exc:
            return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        conn.close()
        return None

    def probe_external(self) -> str | None:
        try:
            psycopg2.connect(self.settings.postgres.dsn() + " connect_timeout=2").close()
        except psycopg2.Error as exc:
            return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None

    def after_ready(self) -> None:
        pg = self.settings.postgres
        conn = psycopg2.connect(self._admin_dsn())
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (pg.user,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                stmt = sql.SQL("{} ROLE {} WITH LOGIN SUPERUSER CREATEDB").format(
                    sql.SQL(verb), sql.Identifier(pg.user)
                )
                if pg.password:
                    stmt = sql.SQL("{} PASSWORD {}").format(stmt, sql.Literal(pg.password))
                cur.execute(stmt)
                for db in dict.fromkeys([pg.dbname, pg.dagster_dbname]):
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                    if cur.fetchone() is None:
                        cur.execute(
                            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                                sql.Identifier(db), sql.Identifier(pg.user)
                            )
                        )
        finally:
            conn.close()
        # The application's own view: its role, its database.
        psycopg2.connect(pg.dsn() + " connect_timeout=5").close()
