"""pg_amcheck on a restored database: every table's heap and every B-tree index, with --heapallindexed.

Row counts say the rows arrived; they do not say the pages and indexes holding them are sound. A
restore rebuilds every index, so a wrong index in the copy (a collation or an IMMUTABLE function
that is not, a bug in a build) shows up here before anyone relies on the backup. The amcheck
extension it needs is installed when missing (`--install-missing`) and dropped again afterwards,
so a side database that becomes the production database carries nothing the source did not have.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

import psycopg

from commands.errors import BackupbotError
from commands.pg.tools import die_with_parent, last_lines, pg_bin_for, pg_env, with_dbname
from commands.redact import redact

AMCHECK_ARGS = ("--no-password", "--heapallindexed", "--install-missing")  # heap and B-tree are both the default
MAX_JOBS = 4  # as a restore's pg_restore --jobs (commands.restore.rules.default_jobs)

COUNT_SQL = """SELECT count(*) FILTER (WHERE c.relkind IN ('r', 'm')),
       count(*) FILTER (WHERE c.relkind = 'i' AND c.relam = (SELECT oid FROM pg_am WHERE amname = 'btree'))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp%'"""


@dataclass(frozen=True)
class AmcheckResult:
    ok: bool
    detail: str
    seconds: float


def amcheck_jobs(cores: int | None) -> int:
    """One connection per core, at most MAX_JOBS: pg_amcheck checks relations (each heap, each index
    with its own heap scan for --heapallindexed) side by side, so a drill's check takes the time of
    its largest table's share rather than of all of them in turn."""
    return max(1, min(MAX_JOBS, cores or 1))


def run_amcheck(dsn: str, dbname: str, secrets: list[str] = (), timeout: float = 6 * 3600,
                jobs: int | None = None) -> AmcheckResult:
    """Run pg_amcheck (of the server's major version or newer) on database `dbname` of `dsn`'s server,
    with `jobs` connections (default: amcheck_jobs of this machine's cores)."""
    started = time.monotonic()
    db_dsn = with_dbname(dsn, dbname)
    try:
        with psycopg.connect(db_dsn, autocommit=True, connect_timeout=10) as conn:
            server_major = conn.info.server_version // 10000
            had_extension = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone() is not None
            tables, indexes = conn.execute(COUNT_SQL).fetchone()
        try:
            argv = [pg_bin_for("pg_amcheck", server_major), *AMCHECK_ARGS,
                    f"--jobs={jobs or amcheck_jobs(os.cpu_count())}"]
            proc = subprocess.run(argv, env=pg_env(dsn, dbname=dbname),
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                                  preexec_fn=die_with_parent)
        finally:
            if not had_extension:  # installed for this check: the copy keeps exactly the source's extensions
                with psycopg.connect(db_dsn, autocommit=True, connect_timeout=10) as conn:
                    conn.execute("DROP EXTENSION IF EXISTS amcheck")
    except (BackupbotError, psycopg.Error, OSError, subprocess.SubprocessError) as exc:
        return AmcheckResult(False, f"could not run pg_amcheck: {redact(str(exc).strip(), list(secrets) + [dsn])}",
                             time.monotonic() - started)
    seconds = time.monotonic() - started
    what = f"{tables} tables and {indexes} B-tree indexes, heap and --heapallindexed"
    if proc.returncode == 0:
        return AmcheckResult(True, f"{what}: no corruption", seconds)
    output = redact((proc.stdout + proc.stderr).decode("utf-8", "replace"), list(secrets) + [dsn])
    return AmcheckResult(False, f"pg_amcheck exited with status {proc.returncode} ({what})\n{last_lines(output, 6)}",
                         seconds)
