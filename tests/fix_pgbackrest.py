"""A throwaway PostgreSQL cluster that archives its WAL into a pgBackRest repository (local path).

One per session: the cluster, its stanza and a first full backup. Tests use their own databases
on it and restore into new data directories (`restore_dir()`), so they don't depend on each other.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from commands.errors import BackupbotError
from commands.pg.cluster import TemporaryCluster
from commands.pg.pgbackrest.backups import PhysicalBackup, backup
from commands.pg.pgbackrest.config import PgBackRestConfig, archive_command, write_config
from commands.pg.pgbackrest.runner import stanza_create
from commands.pg.tools import pg_bin


def _owner() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


def _private_dir(prefix: str) -> Path:
    # as root the server and pgbackrest run as postgres, which must reach it: /tmp, owned by postgres
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.geteuid() == 0 else None))
    path.chmod(0o700)
    if _owner():
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def restart_cluster(cluster: TemporaryCluster) -> None:
    """pg_ctl restart (as postgres when root): archive_mode only changes with a restart."""
    data = cluster.dir / "data"
    argv = [pg_bin("pg_ctl"), "-D", str(data), "-l", str(cluster.dir / "server.log"), "-w", "-t", "60", "restart"]
    if _owner():
        argv = ["runuser", "-u", "postgres", "--", *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/", timeout=120)
    if result.returncode != 0:
        raise BackupbotError(f"pg_ctl restart failed: {result.stderr.strip()[-800:]}")


def start_archiving_cluster(workdir: Path, stanza: str = "main",
                            retention_full: int = 2) -> tuple[TemporaryCluster, PgBackRestConfig]:
    """A TemporaryCluster restarted with archive_mode=on and archive_command pushing into a new
    stanza under `workdir` (created with stanza-create). The caller stops the cluster."""
    cluster = TemporaryCluster().start()
    try:
        cfg = PgBackRestConfig(
            stanza=stanza, repo_path=workdir / "repo", pg_path=cluster.dir / "data", pg_port=cluster.port,
            pg_socket_path=cluster.dir, pg_user=cluster.user, retention_full=retention_full,
            password=cluster.password)
        cfg = cfg.with_config(write_config(cfg, workdir / "conf"))
        with cluster.admin() as conn:
            conn.execute("ALTER SYSTEM SET archive_mode = 'on'")
            conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(archive_command(cfg))))
            conn.execute("ALTER SYSTEM SET archive_timeout = '60s'")
        restart_cluster(cluster)
        stanza_create(cfg)
        return cluster, cfg
    except BaseException:
        cluster.stop()
        raise


@dataclass
class PgBackRestSetup:
    cluster: TemporaryCluster
    cfg: PgBackRestConfig
    workdir: Path
    before_first_backup: datetime       # server time before any backup existed
    first_backup: PhysicalBackup

    def create_database(self, name: str) -> str:
        self.cluster.drop_database(name)
        return self.cluster.create_database(name)

    def restore_dir(self) -> Path:
        """A path for a new data directory (not created), removed with the session."""
        parent = self.workdir / "restores"
        parent.mkdir(exist_ok=True)
        if _owner():
            entry = pwd.getpwnam("postgres")
            os.chown(parent, entry.pw_uid, entry.pw_gid)
        return Path(tempfile.mkdtemp(prefix="data-", dir=parent))


def server_now(dsn: str) -> datetime:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT now()").fetchone()[0]


@pytest.fixture(scope="session")
def pgbackrest_setup():
    """An archiving cluster with a pgBackRest stanza and one full backup."""
    if shutil.which("pgbackrest") is None:
        pytest.fail("pgbackrest is not installed: apt-get install pgbackrest")
    workdir = _private_dir("backupbot-pgbr-")
    cluster = None
    try:
        cluster, cfg = start_archiving_cluster(workdir)
        before = server_now(cluster.dsn())
        time.sleep(1.1)  # info's backup times are whole seconds
        first = backup(cfg, "full")
        time.sleep(1.1)  # so any time a test notes is reachable from this backup (ended a whole second ago)
        yield PgBackRestSetup(cluster, cfg, workdir, before, first)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
