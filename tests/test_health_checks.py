"""/db-health's sections one at a time, each against a real database, without the command around it."""

from __future__ import annotations

import re
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import psycopg

from commands.health import checks
from commands.health.checks import CRITICAL, OK, WARN
from commands.pg.pgbackrest.archiver import archiver_status, force_archive
from commands.settings.health import HealthSettings
from commands.storage.local import LocalStorage
from tests.fix_pgbackrest import _private_dir, start_archiving_cluster

CFG = HealthSettings()


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, **CFG.connect_options())


def test_size_and_growth(sample_dsn):
    from commands.pg.snapshot import database_size

    with connect(sample_dsn) as conn:
        size = database_size(conn)
    assert size > 1_000_000  # a real database, with the sample rows
    first = checks.size_section(size, None, CFG)
    assert (first.status, first.lines) == (OK, (f"{checks.human_bytes(size)} (first sample)",))
    grown = checks.size_section(size, ("2026-11-27T02:00:00+00:00", size // 2), CFG)
    assert grown.status == WARN and "+100.0% since 2026-11-27T02:00:00+00:00" in grown.lines[0]


def test_connections_count_an_idle_transaction(sample_dsn):
    with connect(sample_dsn) as conn, psycopg.connect(sample_dsn) as idle:
        idle.execute("SELECT 1")  # a transaction left open
        time.sleep(1.1)
        section = checks.connections_section(conn, HealthSettings(idle_in_transaction_warn_seconds=1))
    assert section.name == "connections" and section.status == WARN
    assert "idle in transaction 1" in section.lines[0]
    assert section.lines[1] == "1 idle in transaction, 1 for over 1s"


def test_lock_waits_and_long_queries_name_the_sessions_without_literals(sample_dsn):
    with connect(sample_dsn) as conn, psycopg.connect(sample_dsn) as holder, \
            psycopg.connect(sample_dsn, autocommit=True) as waiter:
        assert checks.lock_waits_section(conn).lines == ("none",)
        holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        blocker = holder.info.backend_pid
        worker = threading.Thread(target=_quietly, args=(waiter, "SELECT count(*) FROM users WHERE email = 'a@b.c'"))
        worker.start()
        try:
            time.sleep(1.2)
            locks = checks.lock_waits_section(conn, secrets=["a@b.c"])
            slow = checks.long_queries_section(conn, HealthSettings(long_query_warn_seconds=1))
        finally:
            holder.rollback()
            worker.join(10)
    assert locks.status == WARN and locks.lines[0] == "1 blocked"
    assert f"on pid {blocker}" in locks.lines[1] and "email = ?" in locks.lines[1]
    assert slow.status == WARN and slow.lines[0] == "1 over 1s" and "a@b.c" not in "".join(slow.lines)


def _quietly(conn, query):
    try:
        conn.execute(query)
    except psycopg.Error:
        pass


def test_not_valid_constraints_cache_and_dead_tuples(sample_dsn):
    with psycopg.connect(sample_dsn, autocommit=True) as writer:  # its statistics are flushed when it exits
        writer.execute("CREATE TABLE churn (id int)")
        writer.execute("INSERT INTO churn SELECT generate_series(1, 1000)")
        writer.execute("DELETE FROM churn WHERE id <= 600")
    with connect(sample_dsn) as conn:
        not_valid = checks.not_valid_section(conn)
        dead = checks.dead_tuples_section(conn, CFG)
        cache = checks.cache_hit_section(conn, HealthSettings(cache_hit_warn=1.01, cache_hit_critical=0))
        statements = checks.slow_statements_section(conn)
    assert not_valid.status == WARN and not_valid.lines[0].startswith("1: ")  # the sample holds one
    assert dead.status == WARN and dead.lines[0].startswith("public.churn: 600 dead / 400 live")
    assert cache.status == WARN and cache.lines[0].endswith("%")
    assert "pg_stat_statements is not installed" in statements.lines[0]


def test_a_timed_out_section_is_a_warning(tmp_path, sample_dsn):
    from tests.builders import make_console, make_settings

    console = make_console(make_settings(tmp_path, sample_dsn, health={"statement_timeout_ms": 1}))
    out = console.run("/db-health")
    assert "timed out after 1 ms" in out and "storage:" in out


def _from_store(id, created, verified):
    """A stand-in for a catalog BackupRecord with the fields the sections read."""
    record = SimpleNamespace(is_full=True)
    record.id, record.created_at = id, created.isoformat()
    record.verification = "verified" if verified else None
    record.verified_at = verified.isoformat() if verified else None
    record.restore_seconds = 12.0
    return record


def test_backup_and_drill_sections_from_the_catalog():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert checks.last_backup_section([], now, CFG).status == CRITICAL
    fresh = [_from_store(2, now - timedelta(hours=3), None), _from_store(1, now - timedelta(days=2), now - timedelta(days=9))]
    backup = checks.last_backup_section(fresh, now, CFG)
    assert (backup.status, backup.lines) == (OK, ("#2, 3h00m ago (RPO 24h)",))
    stale = checks.last_backup_section(fresh[1:], now, CFG)
    assert stale.status == CRITICAL and "(RPO 24h)" in stale.lines[0]
    drill = checks.last_drill_section(fresh, now, CFG)
    assert (drill.status, drill.lines) == (WARN, ("backup #1, 9d00h ago, RTO 12.0s",))


def test_storage_section(tmp_path):
    ok = checks.storage_section(LocalStorage(tmp_path / "backups"))
    assert ok.status == OK and ok.lines[0].endswith("writable")
    (tmp_path / "file").write_text("not a folder")
    broken = checks.storage_section(LocalStorage(tmp_path / "file" / "backups"))
    assert broken.status == CRITICAL


# ---------------------------------------------------------------- WAL archiving: the real RPO


def test_no_archiver_section_on_a_server_that_never_archived(sample_dsn):
    assert checks.archiver_section(sample_dsn, CFG) is None


def test_archiver_section_shows_the_last_archived_wal(pgbackrest_setup):
    dsn = pgbackrest_setup.cluster.dsn()
    force_archive(dsn)
    section = checks.archiver_section(dsn, CFG)
    assert section.name == "WAL archiving" and section.status == OK, section
    assert section.lines[0].startswith("last archived 0000") and "ago (RPO 24h00m)" in section.lines[0]
    stale = checks.archiver_section(dsn, HealthSettings(rpo_hours=0))
    assert stale.status == WARN


def test_archiver_section_is_critical_while_archiving_fails():
    """On a cluster of its own: the failure stays in pg_stat_archiver, which other tests read."""
    workdir = _private_dir("backupbot-health-archiver-")
    cluster = None
    try:
        cluster, _ = start_archiving_cluster(workdir)
        dsn = cluster.dsn()
        force_archive(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET archive_command = 'false'")
            conn.execute("SELECT pg_reload_conf()")
            with conn.transaction():
                conn.execute("SELECT pg_current_xact_id()")  # some WAL, so there is a segment to switch
            conn.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 30
        while not archiver_status(dsn).failing and time.monotonic() < deadline:
            time.sleep(0.2)
        failing = checks.archiver_section(dsn, CFG)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    assert failing.status == CRITICAL, failing
    assert failing.lines[0].startswith("last archived 0000")
    assert any(re.match(r"^\d+ failed attempt\(s\), last 0000", line) for line in failing.lines), failing
    assert failing.lines[-1] == "archiving is failing: the newest attempt failed after the last success"


def test_db_health_reports_archiving(tmp_path, pgbackrest_setup):
    from tests.builders import make_console, make_settings

    dsn = pgbackrest_setup.create_database("health_archived")
    out = make_console(make_settings(tmp_path, dsn)).run("/db-health")
    assert "WAL archiving: last archived 0000" in out
