"""A throwaway PostgreSQL server: the demo's database and the tests' real PostgreSQL.

initdb refuses to run as root, so as root the server runs as the `postgres` user. The
superuser's password goes through a file (--pwfile), never argv, and authentication is
scram-sha-256 so the bot really has to pass credentials the way it would in production.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from commands.errors import BackupbotError
from commands.pg_tools import pg_bin


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TemporaryCluster:
    def __init__(self, user: str = "postgres"):
        self.user = user
        self.password = secrets.token_urlsafe(18)
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.dir: Path | None = None
        self._as_root = os.geteuid() == 0

    # -- lifecycle
    def _run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        if self._as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
        if result.returncode != 0:
            raise BackupbotError(f"{Path(argv[argv.index('--') + 1] if '--' in argv else argv[0]).name} failed: "
                                 f"{(result.stderr or result.stdout).strip()[-800:]}")
        return result

    def start(self) -> TemporaryCluster:
        # as root the server runs as postgres, which must reach the folder: /tmp, not a private TMPDIR
        self.dir = Path(tempfile.mkdtemp(prefix="backupbot-pg-", dir="/tmp" if self._as_root else None))
        self.dir.chmod(0o755)
        data, pwfile = self.dir / "data", self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            owner = pwd.getpwnam("postgres")
            for path in (self.dir, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        self._run([pg_bin("initdb"), "-D", str(data), "-U", self.user, "--auth=scram-sha-256",
                   f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync"])
        pwfile.unlink()
        for attempt in range(5):
            self.port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                       "-c shared_buffers=64MB -c max_wal_size=1GB")
            try:
                self._run([pg_bin("pg_ctl"), "-D", str(data), "-l", str(self.dir / "server.log"), "-o", options,
                           "-w", "-t", "60", "start"])
                break
            except BackupbotError:
                if attempt == 4:
                    raise
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        if self.dir is None:
            return
        data = self.dir / "data"
        if (data / "postmaster.pid").exists():
            try:
                self._run([pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
            except BackupbotError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> TemporaryCluster:
        return self.start() if self.dir is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- databases
    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(make_conninfo(self.dsn()), autocommit=True)

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
