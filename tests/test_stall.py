"""No job hangs quietly (issue #22 item 3): a backup blocked on a lock is stopped after [jobs] stall_minutes
of the injected clock, reported failed with the session it waited for, and alerted; that session is untouched."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import psycopg
import pytest

from commands.chat import stall
from commands.errors import ConfigError
from commands.settings import parse_settings
from state import incidents as incident_state
from state.jobs import recent_jobs
from tests.builders import FakeClock, make_console, make_settings, wait_for

APP = "backupbot backup #1"




def sessions(dsn: str, where: str) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT pid, wait_event_type FROM pg_stat_activity WHERE application_name = %s" + where,
                            [APP]).fetchall()


def test_a_backup_waiting_on_a_lock_is_stopped_reported_and_alerted_and_the_holder_is_untouched(tmp_path, sample_dsn):
    clock = FakeClock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    console = make_console(make_settings(tmp_path, sample_dsn, channels={"alerts": "C0ALERTS"},
                                         jobs={"stall_minutes": 5}), clock=clock)
    holder = psycopg.connect(sample_dsn, application_name="nightly-migration")
    try:
        holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")  # an open transaction holds it
        holder_pid = holder.info.backend_pid
        out: list[str] = []
        backup = threading.Thread(target=lambda: out.append(console.run("/backup")))
        backup.start()
        wait_for(lambda: sessions(sample_dsn, " AND wait_event_type = 'Lock'"), "pg_dump to wait on the lock")
        [dog] = stall.active()
        clock.advance(minutes=4, seconds=59)
        assert dog.check() is False and backup.is_alive()  # under the limit: still waiting
        clock.advance(seconds=2)
        assert dog.check() is True
        backup.join(30)
        assert not backup.is_alive()
        [text] = out
        assert ":x: Backup #1 failed: stalled: backup #1 of main moved no bytes for 5m01s" in text
        assert "Nothing was stored as a backup." in text
        assert (f"waiting for a lock (Lock/relation) held by pid {holder_pid} (user postgres, application "
                f"nightly-migration, idle in transaction since") in text
        [job] = recent_jobs(console.services.store, "main")
        assert job.status == "failed" and f"held by pid {holder_pid}" in job.error
        wait_for(lambda: not sessions(sample_dsn, ""), "the job's own session to end")  # its children are gone
        # the session it waited for is untouched: same transaction, lock still held
        assert holder.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND mode = "
                              "'AccessExclusiveLock' AND granted").fetchone()[0] >= 1
        assert holder.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    finally:
        holder.rollback()
        holder.close()
    incident = incident_state.open_incident_in(console.services.store, "C0ALERTS")
    assert incident is not None and incident.database == "main" and incident.title == "main: backup #1 stalled"
    [evidence] = [e for e in incident_state.iter_entries(console.services.store, incident.id)
                  if e.kind == "alarm.raised"]
    assert f"pid {holder_pid}" in evidence.detail["waiting_for"] and evidence.detail["job_id"] == 1
    assert stall.active() == []
    assert "Backup #2 of main" in console.run("/backup")  # the database is free again for the next job


def test_a_job_that_keeps_moving_bytes_is_never_stopped():
    clock = FakeClock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    stopped = []
    dog = stall.Watchdog("backup #9 of main", clock, 5, describe=lambda: None, stop=lambda: stopped.append(1))
    for moved in range(1, 20):  # an hour and a half, a little more every 4 minutes
        clock.advance(minutes=4)
        dog.moved(moved * 1024)
        assert dog.check() is False
    clock.advance(minutes=5)
    dog.moved(19 * 1024)  # the same count again is not progress
    assert dog.check() is True and stopped == [1] and "moved no bytes for 5m00s" in dog.reason
    assert dog.check() is True and stopped == [1]  # stopped once


def test_stall_minutes_is_checked():
    assert parse_settings({}, {}).jobs.stall_minutes == 30
    assert parse_settings({"jobs": {"stall_minutes": 5}}, {}).jobs.stall_minutes == 5
    with pytest.raises(ConfigError, match="jobs.stall_minutes: expected a whole number from 1 to 1440, got 0"):
        parse_settings({"jobs": {"stall_minutes": 0}}, {})


def test_a_table_restore_waiting_on_a_lock_is_stopped_rolled_back_and_alerted(tmp_path, sample_dsn):
    from tests.test_restore import ACCESS, approve, message_id

    clock = FakeClock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS, channels={"alerts": "C0ALERTS"},
                                         jobs={"stall_minutes": 5}), clock=clock)
    assert "succeeded" in console.run("/backup")
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.abandoned_carts WHERE id <= 100")
    request = message_id(console.run("/restore 1 --tables abandoned_carts"), "Restore request #1")
    holder = psycopg.connect(sample_dsn, application_name="analyst-session")
    try:
        holder.execute("LOCK TABLE abandoned_carts IN ROW EXCLUSIVE MODE")  # blocks DROP, not pg_dump's read
        out: list[str] = []
        approval = threading.Thread(target=lambda: out.append(approve(console, request, "U0APP3")))
        approval.start()
        with psycopg.connect(sample_dsn, autocommit=True) as conn:
            wait_for(lambda: conn.execute("SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'backupbot restore #%' "
                                          "AND wait_event_type = 'Lock'").fetchone(), "the restore to wait on the lock")
        [dog] = stall.active()
        clock.advance(minutes=5, seconds=1)
        assert dog.check() is True
        approval.join(30)
        assert not approval.is_alive()
        [text] = out
        assert "Restore request #1 failed: stalled: restore #" in text and "moved no bytes for 5m01s" in text
        assert f"held by pid {holder.info.backend_pid} (user postgres, application analyst-session" in text
        assert holder.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND granted").fetchone()[0] > 0
    finally:
        holder.rollback()
        holder.close()
    with psycopg.connect(sample_dsn) as conn:  # the restore's transaction was rolled back: nothing changed
        assert conn.execute("SELECT count(*) FROM public.abandoned_carts").fetchone()[0] == 700
    incident = incident_state.open_incident_in(console.services.store, "C0ALERTS")
    assert incident is not None and incident.title.startswith("main: restore #") and incident.title.endswith("stalled")
