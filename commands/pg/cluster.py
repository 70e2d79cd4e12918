"""A throwaway PostgreSQL server: the demo's database and the tests' real PostgreSQL.

initdb refuses to run as root, so as root the server runs as the `postgres` user. The
superuser's password goes through a file (--pwfile), never argv, and authentication is
scram-sha-256 so the bot really has to pass credentials the way it would in production.
Settings go into a config file rather than `pg_ctl -o`, which pg_ctl hands to a shell.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from commands.errors import BackupbotError, DumpError
from commands.pg.tools import pg_bin

_START_ATTEMPTS = 5
_TIMEOUT = 120


def find_pg_bin(name: str) -> str:
    """Path of a PostgreSQL program (PATH, then the newest /usr/lib/postgresql/<major>/bin)."""
    try:
        return pg_bin(name)
    except DumpError:
        raise BackupbotError(f"{name} was not found on PATH or in /usr/lib/postgresql/<version>/bin: "
                             "install the PostgreSQL server package") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class TemporaryCluster:
    def __init__(self, user: str = "postgres"):
        self.user = user
        self.password = secrets.token_urlsafe(18)
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.dir: Path | None = None
        self._as_root = os.geteuid() == 0
        self._owner_pid: int | None = None
        self._pg_ctl: str | None = None

    # -- lifecycle
    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        name = Path(argv[0]).name
        if self._as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        # PG* variables of the caller (PGDATA, PGPORT, ...) must not redirect initdb or pg_ctl
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        try:
            result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=self.dir, timeout=_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BackupbotError(f"{name} did not finish within {_TIMEOUT}s") from None
        if result.returncode != 0:
            raise BackupbotError(f"{name} failed: {(result.stderr or result.stdout).strip()[-800:]}")
        return result

    def _give_to_postgres(self, path: Path) -> None:
        if self._as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def _write_private(self, path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self._give_to_postgres(path)

    def start(self) -> TemporaryCluster:
        if self.dir is not None:
            return self
        initdb = find_pg_bin("initdb")
        # pg_ctl from the same installation as initdb, so the two never mix major versions
        sibling = Path(os.path.realpath(initdb)).with_name("pg_ctl")
        self._pg_ctl = str(sibling) if sibling.exists() else find_pg_bin("pg_ctl")
        # as root the server runs as postgres, which must reach the folder: /tmp, not a private TMPDIR
        self.dir = Path(tempfile.mkdtemp(prefix="backupbot-pg-", dir="/tmp" if self._as_root else None))
        self._owner_pid = os.getpid()
        atexit.register(self._stop_at_exit)
        try:
            self.dir.chmod(0o700)
            self._give_to_postgres(self.dir)
            data, pwfile = self.dir / "data", self.dir / "pwfile"
            self._write_private(pwfile, self.password + "\n")
            try:
                self._run([initdb, "-D", str(data), "-U", self.user, "--auth=scram-sha-256", f"--pwfile={pwfile}",
                           "-E", "UTF8", "--locale=C", "--no-sync"])
            finally:
                pwfile.unlink(missing_ok=True)
            with open(data / "postgresql.conf", "a") as f:
                f.write("\ninclude 'backupbot.conf'\n")
            self._start_server(data)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_server(self, data: Path) -> None:
        log = self.dir / "server.log"
        for attempt in range(_START_ATTEMPTS):
            self.port = free_port()
            conf = data / "backupbot.conf"
            conf.unlink(missing_ok=True)
            self._write_private(conf, "\n".join([
                "listen_addresses = '127.0.0.1'",
                f"port = {self.port}",
                f"unix_socket_directories = {conf_quote(str(self.dir))}",
                "max_connections = 100",
                "shared_preload_libraries = ''",
                "shared_buffers = 64MB",
                "fsync = off",
                "synchronous_commit = off",
                "full_page_writes = off",
                "max_wal_size = 1GB",
                "logging_collector = off",
                "",
            ]))
            logged = log.stat().st_size if log.exists() else 0
            try:
                self._run([self._pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"])
                return
            except BackupbotError as exc:
                tail = log.read_text(errors="replace")[logged:] if log.exists() else ""
                # another process took the port between free_port() and the bind: pick another
                if "could not bind" in tail and attempt + 1 < _START_ATTEMPTS:
                    continue
                raise BackupbotError(f"{exc}\n{tail.strip()[-800:]}") from None

    def stop(self) -> None:
        if self.dir is None:
            return
        data = self.dir / "data"
        pidfile = data / "postmaster.pid"
        if pidfile.exists() and self._pg_ctl:
            try:
                self._run([self._pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"])
            except BackupbotError:
                try:
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGQUIT)  # SIGQUIT = immediate shutdown
                except (OSError, ValueError, IndexError):
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        self.port = None
        atexit.unregister(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        # a forked child exiting must not take its parent's server down
        if os.getpid() == self._owner_pid:
            self.stop()

    def __enter__(self) -> TemporaryCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- databases
    def dsn(self, dbname: str = "postgres") -> str:
        if self.port is None:
            raise BackupbotError("the temporary PostgreSQL server is not running")
        return f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/" \
               f"{quote(dbname, safe='')}"

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn(), autocommit=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        with self.admin() as conn:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            conn.execute(query)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def database_exists(self, name: str) -> bool:
        with self.admin() as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None
