"""The restore plan shows what the restore throws away: the row changes since the backup, from the write
counters the backup recorded in its snapshot, and says "cannot know" when the counters do not compare."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg

from commands.restore.discards import after_time_lines
from state.backups import get_backup
from tests.builders import FakeClock, make_console, make_settings, resign_manifest
from tests.test_restore import approve, message_id

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1"], "required_approvals": 1}


def write(dsn: str, statements: str) -> None:
    """Writes whose statistics are published before this returns (the server otherwise does so within
    a second or so): pg_stat_force_next_flush() makes the session flush them as it goes idle."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statements)
        conn.execute("SELECT pg_stat_force_next_flush()")


def notifications_1600(dsn: str) -> None:
    write(dsn, "INSERT INTO public.notifications (user_id, template_id) SELECT (SELECT min(id) FROM users), "
               "(SELECT min(id) FROM templates) FROM generate_series(1, 1500); "
               "UPDATE public.notifications SET status = 'sent' WHERE id IN "
               "(SELECT id FROM public.notifications ORDER BY id DESC LIMIT 100)")


def test_the_plan_shows_the_row_changes_since_the_backup_and_bounds_the_last_write(tmp_path, sample_dsn):
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))  # the catalog keeps whole seconds
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS), clock=clock)
    assert "Backup #1 of main succeeded" in console.run("/backup")
    out = console.run("/restore 1 --dry-run")
    assert "Discards: no row changes since backup #1 (its write counters match the target's now)" in out, out

    clock.advance(hours=3)
    notifications_1600(sample_dsn)
    out = console.run("/restore 1 --dry-run")
    assert ("Discards: about 1,600 row changes made since backup #1 in 1 table(s): public.notifications 1,600"
            in out), out
    assert "Last write: within the last 3h00m (after backup #1, whose counters differ from now)" in out, out

    clock.advance(hours=1)
    assert "Backup #2 of main succeeded" in console.run("/backup")  # a reading with no write after it
    clock.advance(minutes=20)
    write(sample_dsn, "DELETE FROM public.usage_stats WHERE id IN (SELECT id FROM public.usage_stats LIMIT 3)")
    out = console.run("/restore 1 --dry-run")
    assert "about 1,603 row changes made since backup #1 in 2 table(s): public.notifications 1,600, " \
           "public.usage_stats 3" in out, out
    assert "Last write: within the last 20m00s (after backup #2" in out, out

    out = console.run("/restore 2 --tables notifications --dry-run")  # a table restore: only that table
    assert "Discards: no row changes since backup #2" in out, out


def test_the_last_write_is_placed_between_two_readings(tmp_path, sample_dsn):
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))  # the catalog keeps whole seconds
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS), clock=clock)
    assert "succeeded" in console.run("/backup")
    clock.advance(hours=2)
    notifications_1600(sample_dsn)
    clock.advance(minutes=30)
    assert "Backup #2 of main succeeded" in console.run("/backup")
    clock.advance(minutes=15)
    out = console.run("/restore 1 --dry-run")
    assert "about 1,600 row changes made since backup #1" in out, out
    assert "Last write: between backup #1 (2h45m ago) and backup #2 (15m00s ago)" in out, out


def test_cannot_know_after_a_statistics_reset_never_zero(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS))
    assert "succeeded" in console.run("/backup")
    notifications_1600(sample_dsn)
    write(sample_dsn, "SELECT pg_stat_reset()")
    out = console.run("/restore 1 --dry-run")
    assert "Discards: cannot know the row changes since backup #1: the statistics were reset since the backup" in out
    assert "no row changes" not in out and "about 0" not in out


def test_cannot_know_on_another_server(tmp_path, sample_dsn, dr_cluster):
    """A restore onto a DR server over a database of the same name: its counters are another server's."""
    dbname = sample_dsn.rsplit("/", 1)[1]
    dr_cluster.create_database(dbname)
    try:
        console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS, env={"DR_URL": dr_cluster.dsn()},
                                             targets={"dr": {"url_env": "DR_URL"}}))
        assert "succeeded" in console.run("/backup")
        out = console.run("/restore 1 --to dr --dry-run")
        assert "Discards: cannot know the row changes since backup #1: the target is another server" in out, out
    finally:
        dr_cluster.drop_database(dbname)


def test_a_backup_from_before_counters_still_verifies_and_cannot_know(tmp_path, sample_dsn):
    """An old signed manifest has no write_counters: its signature still verifies, the plan cannot know."""
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS))
    assert "succeeded" in console.run("/backup")
    with sqlite3.connect(console.services.store.path) as db:
        db.execute("UPDATE backups SET write_counters = NULL WHERE id = 1")
    record = get_backup(console.services.store, 1)
    assert record.write_counters is None
    resign_manifest(console, 1)
    root = tmp_path / "backups"
    manifest = json.loads((root / record.manifest_key).read_text())
    assert "write_counters" in manifest and manifest["write_counters"] is None
    out = console.run("/restore 1")
    assert "Provenance: manifest signed" in out, out
    assert ("Discards: cannot know the row changes since backup #1: the backup was taken before the bot recorded "
            "write counters") in out, out
    out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "Restore request #1 restored backup #1" in out, out


def test_the_counters_are_in_the_signed_manifest_and_tampering_shows(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS))
    assert "succeeded" in console.run("/backup")
    record = get_backup(console.services.store, 1)
    counters = record.write_counters
    assert counters["system_identifier"] and counters["database_oid"]
    assert set(counters["tables"]["public.notifications"]) == {"relid", "ins", "upd", "del", "live"}
    with sqlite3.connect(console.services.store.path) as db:  # the catalog row no longer says what was signed
        counters["tables"]["public.notifications"]["ins"] += 1000
        db.execute("UPDATE backups SET write_counters = ? WHERE id = 1", [json.dumps(counters)])
    out = console.run("/restore 1 --dry-run")
    assert "write_counters differ" in out, out


def test_a_point_in_time_copy_lacks_the_changes_after_t_bounded_by_the_readings(tmp_path, sample_dsn):
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))  # the catalog keeps whole seconds
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS), clock=clock)
    services = console.services
    before_any = clock() - timedelta(minutes=1)
    assert "cannot know (no backup of main" in after_time_lines(services, "main", sample_dsn, before_any)[0]
    assert "succeeded" in console.run("/backup")  # #1, before T
    notifications_1600(sample_dsn)
    clock.advance(hours=1)
    moment = clock()
    clock.advance(hours=1)
    write(sample_dsn, "DELETE FROM public.usage_stats WHERE id IN (SELECT id FROM public.usage_stats LIMIT 5)")
    assert "succeeded" in console.run("/backup")  # #2, after T
    write(sample_dsn, "DELETE FROM public.usage_stats WHERE id IN (SELECT id FROM public.usage_stats LIMIT 2)")
    [line] = after_time_lines(services, "main", sample_dsn, moment)
    assert line == (f"Not in the copy: the row changes made after {moment.isoformat()}: at least 2 (made since backup "
                    "#2, taken after it) and at most 1,607 (made since backup #1, taken before it); the counters cannot "
                    "place changes in time more exactly"), line


def test_a_point_in_time_plan_says_which_changes_the_copy_lacks(tmp_path, pgbackrest_setup):
    """Real time here (the moment is the server's): pgBackRest replays WAL by the server's clock."""
    import time

    from tests.fix_pgbackrest import server_now
    from tests.test_point_in_time_restore import pitr_console

    dsn = pgbackrest_setup.create_database("discards_app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY)")
    console = pitr_console(tmp_path, pgbackrest_setup, dsn)
    assert "Backup #1 of main succeeded" in console.run("/backup")  # a reading before T
    assert "succeeded" in console.run("/backup physical --type incr")
    write(dsn, "INSERT INTO ledger SELECT generate_series(1, 40)")
    time.sleep(1.2)  # WAL time, not a schedule: T must fall between two writes on the server's clock
    moment = server_now(dsn)
    time.sleep(1.2)
    write(dsn, "DELETE FROM ledger WHERE id > 30")
    assert "succeeded" in console.run("/backup")  # a reading after T
    write(dsn, "DELETE FROM ledger WHERE id > 25")
    out = console.run(f'/restore --time "{moment.isoformat()}" --dry-run')
    assert "Not in the copy: the row changes made after" in out, out
    assert ("at least 5 (made since backup #3, taken after it) and at most 55 (made since backup #1, taken before it)"
            in out), out
