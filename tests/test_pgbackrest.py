"""pgBackRest engine: physical backups, WAL archiving and point-in-time restores into a new data
directory, against a real archiving cluster (tests/fix_pgbackrest.py)."""

from __future__ import annotations

import dataclasses
import re
import time
from datetime import timedelta

import psycopg
import pytest

from commands.errors import ConfigError
from commands.pg.pgbackrest.archiver import archiver_status, force_archive, time_reachable
from commands.pg.pgbackrest.backups import archive_range, backup, info
from commands.pg.pgbackrest.config import PgBackRestConfig
from commands.pg.pgbackrest.restored_cluster import restore_args, restore_to_new_datadir
from commands.pg.pgbackrest.runner import PgBackRestError, check, verify_repo
from tests.fix_pgbackrest import server_now

WAL = re.compile(r"^[0-9A-F]{24}$")


def _count(dsn: str, table: str = "orders") -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_restore_to_a_time_brings_back_rows_deleted_after_it(pgbackrest_setup):
    setup = pgbackrest_setup
    dsn = setup.create_database("pitr_orders")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL)")
        conn.execute("INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 100) g")
        time.sleep(0.3)
        target = conn.execute("SELECT now()").fetchone()[0]
        time.sleep(0.3)
        conn.execute("DELETE FROM orders WHERE id > 60")          # the mistake, after the target
        conn.execute("INSERT INTO orders VALUES (1000, 'late')")  # and a write that must not come back
    assert _count(dsn) == 61

    reach = time_reachable(setup.cfg, target, setup.cluster.dsn())
    assert reach, reach.reason
    assert reach.backup.label == info(setup.cfg)[-1].label or reach.backup.stopped < target
    assert reach.latest > target

    restored = restore_to_new_datadir(setup.cfg, target, None, setup.restore_dir(), None)
    try:
        assert restored.port != setup.cluster.port
        restored_dsn = restored.dsn("pitr_orders")
        assert _count(restored_dsn) == 100
        with psycopg.connect(restored_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM orders WHERE id > 60").fetchone()[0] == 40
            assert conn.execute("SELECT count(*) FROM orders WHERE id = 1000").fetchone()[0] == 0
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
            assert conn.execute("SELECT current_setting('archive_mode')").fetchone()[0] == "off"
            # it is a promoted copy that takes writes, on a new timeline
            conn.execute("INSERT INTO orders VALUES (2000, 'only in the copy')")
            conn.commit()
        # the live cluster is as it was: the delete stays, archiving still on
        assert _count(dsn) == 61
        live = archiver_status(setup.cluster.dsn())
        assert live.archiving and live.pushes_to(setup.cfg)
        # the copy does not archive: its WAL never reaches the live stanza
        copy = archiver_status(restored.dsn())
        assert not copy.archiving and copy.archived_count == 0 and copy.failed_count == 0
    finally:
        restored.stop_and_remove()
    assert not restored.datadir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(restored.dsn(), connect_timeout=3)


def test_info_lists_the_full_backup_with_its_wal_range(pgbackrest_setup):
    setup = pgbackrest_setup
    backups = info(setup.cfg)
    first = next(b for b in backups if b.label == setup.first_backup.label)
    assert first.type == "full" and first.label.endswith("F")
    assert WAL.match(first.wal_start) and WAL.match(first.wal_stop) and first.wal_start <= first.wal_stop
    assert first.wal_range == f"{first.wal_start}..{first.wal_stop}"
    assert re.match(r"^[0-9A-F]+/[0-9A-F]+$", first.lsn_start) and first.lsn_start != first.lsn_stop
    assert first.started <= first.stopped and first.stopped.tzinfo is not None
    assert setup.before_first_backup < first.started + timedelta(seconds=1)
    assert first.size > 1_000_000 and 0 < first.repo_size < first.size  # compressed in the repository
    assert first.delta == first.size and first.prior is None and not first.error
    archived = archive_range(setup.cfg)
    assert archived.database_id.startswith("15-")
    assert archived.min_wal <= first.wal_start <= first.wal_stop <= archived.max_wal


def test_incremental_backup_after_more_writes_copies_less_and_restores(pgbackrest_setup):
    setup = pgbackrest_setup
    dsn = setup.create_database("incr_orders")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL)")
        conn.execute("INSERT INTO orders SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g")
    incr = backup(setup.cfg, "incr")
    labels = [b.label for b in info(setup.cfg)]
    assert incr.type == "incr" and incr.label in labels and incr.label.endswith("I")
    assert incr.prior in labels and incr.label.startswith(incr.prior.split("_")[0])
    assert 0 < incr.delta < incr.size
    assert WAL.match(incr.wal_start)

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM orders")
    restored = restore_to_new_datadir(setup.cfg, None, incr.label, setup.restore_dir(), None)
    try:
        assert _count(restored.dsn("incr_orders")) == 5000
    finally:
        restored.stop_and_remove()
    assert _count(dsn) == 0


def test_time_reachability(pgbackrest_setup):
    setup = pgbackrest_setup
    before = time_reachable(setup.cfg, setup.before_first_backup)
    assert not before and "before the first backup ended" in before.reason
    future = time_reachable(setup.cfg, server_now(setup.cluster.dsn()) + timedelta(hours=1),
                            setup.cluster.dsn())
    assert not future and "after the newest archived point" in future.reason
    assert future.backup is not None  # the set is known; the archive just does not reach that far
    with pytest.raises(ConfigError, match="time zone"):
        time_reachable(setup.cfg, setup.before_first_backup.replace(tzinfo=None))


def test_archiver_status_gives_the_real_rpo(pgbackrest_setup, pg_cluster):
    setup = pgbackrest_setup
    status = force_archive(setup.cluster.dsn())
    assert status.archiving and status.pushes_to(setup.cfg)
    assert WAL.match(status.last_archived_wal) and status.archived_count >= 1
    assert status.failed_count == 0 and not status.failing
    assert 0 <= status.rpo_seconds < 30
    assert status.last_archived_wal <= archive_range(setup.cfg).max_wal
    assert "archive-push" in status.archive_command

    plain = archiver_status(pg_cluster.dsn())   # the ordinary test cluster does not archive
    assert plain.archive_mode == "off" and not plain.archiving and plain.rpo_seconds is None
    assert not plain.pushes_to(setup.cfg)


def test_check_and_verify_the_repository(pgbackrest_setup):
    setup = pgbackrest_setup
    assert check(setup.cfg)
    result = verify_repo(setup.cfg)
    assert result.ok and result.code == 0
    assert "status: ok" in result.summary and setup.first_backup.label in result.summary


def test_config_file_is_private_and_holds_no_password(pgbackrest_setup):
    setup = pgbackrest_setup
    path = setup.cfg.config_path
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert f"[{setup.cfg.stanza}]" in text and f"repo1-path={setup.cfg.repo_path}" in text
    assert "repo1-retention-full=2" in text and f"pg1-port={setup.cluster.port}" in text
    assert setup.cluster.password not in text
    assert setup.cluster.password not in repr(setup.cfg)


def test_failures_are_typed_and_redacted(pgbackrest_setup, tmp_path):
    setup = pgbackrest_setup
    wrong = dataclasses.replace(setup.cfg, password="not-the-password-123")
    with pytest.raises(PgBackRestError) as failed:
        backup(wrong, "full")
    assert failed.value.code and "password authentication failed" in str(failed.value)
    assert "not-the-password-123" not in str(failed.value)

    missing = dataclasses.replace(setup.cfg, stanza="nosuch")
    with pytest.raises(PgBackRestError, match="nosuch"):
        info(missing)
    with pytest.raises(ConfigError, match="stanza"):
        PgBackRestConfig(stanza="main; rm -rf /")
    with pytest.raises(ConfigError, match="full, diff or incr"):
        backup(setup.cfg, "everything")
    with pytest.raises(ConfigError, match="backup set"):
        restore_args(setup.cfg, tmp_path, None, "--force")

    busy = setup.restore_dir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(PgBackRestError, match="not empty"):
        restore_to_new_datadir(setup.cfg, None, None, busy, None)
    assert (busy / "keep.txt").read_text() == "mine"
    with pytest.raises(PgBackRestError, match="live cluster"):
        restore_to_new_datadir(setup.cfg, None, None, setup.cfg.pg_path, None)
