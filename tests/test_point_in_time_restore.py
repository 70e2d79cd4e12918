"""`/restore --time T` through approvals: the rows deleted after T come back on a new cluster, the
live cluster is not touched, and a drill of the physical backup records its RTO (issue #14)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import psycopg

from commands.pg.pgbackrest.archiver import archiver_status, force_archive
from commands.pg.tools import pg_bin
from commands.schedules import build_digest, check_rpo
from state import approvals as request_state
from state.physical_backups import list_physical_backups
from tests.builders import FakeClock, Recorder, make_console, make_settings
from tests.fix_pgbackrest import _private_dir, server_now, start_archiving_cluster
from tests.test_restore import approve, message_id

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1"], "required_approvals": 1}


def pitr_state(tmp_path, setup) -> dict:
    """[state] with a scratch folder the cluster's owner can reach (as root, postgres cannot pass
    through pytest's 0700 tmp_path to a scratch folder beside the state database)."""
    return {"path": str(tmp_path / "state.db"), "scratch_dir": str(setup.workdir / f"scratch-{tmp_path.name}")}


def pitr_console(tmp_path, setup, dsn):
    databases = {"main": {"url_env": "DATABASE_URL",
                          "pgbackrest": {"config": str(setup.cfg.config_path), "stanza": setup.cfg.stanza}}}
    return make_console(make_settings(tmp_path, dsn, databases=databases, access=ACCESS, state=pitr_state(tmp_path, setup)))


def stop_restored(datadir: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", pg_bin("pg_ctl"), "-D", datadir, "-m", "immediate", "stop"],
                   capture_output=True, timeout=60)
    shutil.rmtree(datadir, ignore_errors=True)


def test_restore_to_a_time_brings_back_what_was_deleted_after_it(tmp_path, pgbackrest_setup):
    dsn = pgbackrest_setup.create_database("pitr_app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY, entry text NOT NULL)")
        conn.execute("INSERT INTO ledger SELECT g, 'entry ' || g FROM generate_series(1, 100) g")
    console = pitr_console(tmp_path, pgbackrest_setup, dsn)
    out = console.run("/backup physical --type incr")
    assert "succeeded" in out, out
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO ledger SELECT g, 'late entry ' || g FROM generate_series(101, 150) g")
    time.sleep(1.2)
    moment = server_now(dsn)
    time.sleep(1.2)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM ledger WHERE id > 20")  # the mistake the restore undoes
    stamp = moment.strftime("%Y-%m-%d %H:%M:%S.%f%z")

    assert "Incident #1" in console.run("/incident open ledger rows deleted --db main")
    out = console.run(f'/restore --time "{stamp}"')
    assert "point-in-time restore of main to" in out and "Backup set:" in out and "Reachable: yes" in out, out
    assert "is not touched" in out and "Waiting for 1 approval" in out
    planned_port = int(re.search(r"on port (\d+)", out).group(1))  # the plan names where the copy will run
    out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "restored to" in out and "and verified" in out, out
    result = request_state.get_request(console.services.store, 1).result
    try:
        port = result["port"]
        assert port == planned_port
        assert re.search(rf"127\.0\.0\.1:{port}", out)
        restored = dsn.replace(f":{pgbackrest_setup.cluster.port}/", f":{port}/")
        with psycopg.connect(restored) as conn:
            assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 150  # the delete is not there
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        with psycopg.connect(dsn) as conn:  # the live cluster kept its (mistaken) present
            assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 20
        closed = console.run("/incident close a DELETE without WHERE")
        # the window runs from the incident's start back to the recovery target, not to a dump's time
        assert f"(incident start → recovery point {moment.isoformat()[:19]}" in closed, closed
    finally:
        stop_restored(result["datadir"])


def test_unreachable_times_are_refused_before_anyone_is_asked(tmp_path, pgbackrest_setup):
    dsn = pgbackrest_setup.create_database("pitr_refused")
    console = pitr_console(tmp_path, pgbackrest_setup, dsn)
    before = pgbackrest_setup.before_first_backup.strftime("%Y-%m-%d %H:%M:%S%z")
    out = console.run(f'/restore --time "{before}"')
    assert "cannot be restored to" in out and "before the first backup ended" in out, out
    assert "(only you)" in out
    assert "no time zone" in console.run('/restore --time "2026-11-29 14:04:00"')
    assert "is not a time" in console.run('/restore --time "yesterday"')
    assert request_state.get_request(console.services.store, 1) is None


def test_drill_of_a_physical_backup_records_its_rto(tmp_path, pgbackrest_setup):
    dsn = pgbackrest_setup.create_database("pitr_drill")
    console = pitr_console(tmp_path, pgbackrest_setup, dsn)
    assert "succeeded" in console.run("/backup physical --type incr")
    out = console.run("/backup verify physical latest")
    assert "Drill of physical backup" in out and "passed" in out and "(RTO)" in out, out
    assert "pgbackrest verify: ok" in out
    record = list_physical_backups(console.services.store, "main")[0]
    assert record.verification == "verified" and record.restore_seconds > 0


def test_dead_man_alert_fires_when_archiving_stops_even_with_fresh_dumps(tmp_path):
    """On a cluster of its own: a failing archive_command stays in pg_stat_archiver, which others read."""
    workdir = _private_dir("backupbot-deadman-")
    cluster = None
    try:
        cluster, cfg = start_archiving_cluster(workdir)
        dsn = cluster.dsn()
        force_archive(dsn)
        databases = {"main": {"url_env": "DATABASE_URL",
                              "pgbackrest": {"config": str(cfg.config_path), "stanza": cfg.stanza}}}
        clock = FakeClock()
        console = make_console(make_settings(tmp_path, dsn, databases=databases, access=ACCESS,
                                             channels={"alerts": "C0ALERTS"}), clock=clock)
        assert "succeeded" in console.run("/backup")  # the dumps are fine
        recorder = Recorder()
        assert check_rpo(console.services, recorder) == []
        assert "WAL archiving (the real RPO): last segment archived" in build_digest(console.services).text()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET archive_command = 'false'")
            conn.execute("SELECT pg_reload_conf()")
            with conn.transaction():
                conn.execute("SELECT pg_current_xact_id()")
            conn.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 30
        while not archiver_status(dsn).failing and time.monotonic() < deadline:
            time.sleep(0.2)
        posted = check_rpo(console.services, recorder)
        assert len(posted) == 1 and "WAL archiving is failing" in posted[0], posted
        assert check_rpo(console.services, recorder) == []  # once, not every minute
        assert "FAILING now" in build_digest(console.services).text()
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_restore_to_a_time_into_a_new_database_on_a_dr_server(tmp_path, pgbackrest_setup, dr_cluster):
    dsn = pgbackrest_setup.create_database("pitr_into")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY, entry text NOT NULL)")
        conn.execute("INSERT INTO ledger SELECT g, 'entry ' || g FROM generate_series(1, 80) g")
    databases = {"main": {"url_env": "DATABASE_URL", "pgbackrest": {"config": str(pgbackrest_setup.cfg.config_path),
                                                                    "stanza": pgbackrest_setup.cfg.stanza}}}
    console = make_console(make_settings(tmp_path, dsn, databases=databases, access=ACCESS,
                                         env={"DR_URL": dr_cluster.dsn("postgres")}, targets={"dr": {"url_env": "DR_URL"}},
                                         state=pitr_state(tmp_path, pgbackrest_setup)))
    assert "succeeded" in console.run("/backup physical --type incr")
    time.sleep(1.2)
    moment = server_now(dsn)
    time.sleep(1.2)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE ledger")
    stamp = moment.strftime("%Y-%m-%d %H:%M:%S.%f%z")
    out = console.run(f'/restore --time "{stamp}" --to dr --into ledger_before')
    assert f"into the new database 127.0.0.1:{dr_cluster.port}/ledger_before" in out, out
    out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "restored to" in out and "into the new database" in out and "and verified" in out, out
    try:
        with psycopg.connect(dr_cluster.dsn("ledger_before")) as conn:
            assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 80
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 0  # the live one: as it is
        row = request_state.get_request(console.services.store, 1)
        assert "datadir" not in row.result and not os.path.exists(row.plan["datadir"])  # the copy is gone
        assert "already exists" in console.run(f'/restore --time "{stamp}" --to dr --into ledger_before')
        assert "needs --into" in console.run(f'/restore --time "{stamp}" --to dr')
    finally:
        dr_cluster.drop_database("ledger_before")
