"""Restore drills: restore into a scratch database, compare with the manifest, leave nothing behind."""

from __future__ import annotations

import psycopg

from state.backups import get_backup
from tests.builders import make_console, make_settings, store_as_if_pg_dump_wrote


def scratch_databases(pg_cluster) -> list[str]:
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'backupbot_drill_%'")]


def test_verify_latest_records_rto_and_drops_the_scratch_database(tmp_path, sample_dsn, pg_cluster):
    console = make_console(make_settings(tmp_path, sample_dsn))
    console.run("/backup --format gzip")
    out = console.run("/backup verify latest")
    assert "Drill of backup #1 (main) passed" in out and "(RTO)" in out and "rows match the backup" in out
    record = get_backup(console.services.store, 1)
    assert record.verification == "verified" and record.restore_seconds > 0
    assert scratch_databases(pg_cluster) == []
    assert "verified" in console.run("/backup list")
    assert "last verified drill: backup #1" in console.run("/db-health")


def test_failed_drill_marks_the_backup_and_leaves_nothing(tmp_path, sample_dsn, pg_cluster):
    console = make_console(make_settings(tmp_path, sample_dsn))
    console.run("/backup")
    record = get_backup(console.services.store, 1)
    (tmp_path / "backups" / record.key).write_bytes(b"not what was stored")
    out = console.run("/backup verify 1")
    assert "Drill of backup #1 (main) FAILED" in out and "corrupted" in out
    assert get_backup(console.services.store, 1).verification == "failed verification"
    assert scratch_databases(pg_cluster) == []


def test_drill_fails_mid_restore_and_still_cleans_up(tmp_path, sample_dsn, pg_cluster):
    console = make_console(make_settings(tmp_path, sample_dsn))
    console.run("/backup --format plain")
    record = get_backup(console.services.store, 1)
    artifact = tmp_path / "backups" / record.key
    # a dump that breaks half-way, stored with a matching checksum (as if pg_dump had lied)
    broken = artifact.read_bytes().replace(b"CREATE TABLE public.users", b"CREATE TABLE public.users(x int); SELECT 1/0; --")
    store_as_if_pg_dump_wrote(console, 1, broken)
    out = console.run("/backup verify 1")
    assert "FAILED" in out and "division by zero" in out
    assert scratch_databases(pg_cluster) == []


def test_verify_input_errors(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn))
    assert "there is no full backup of main yet" in console.run("/backup verify latest")
    assert "Usage: `/backup verify" in console.run("/backup verify")
    assert "is not a backup number" in console.run("/backup verify x")


OPERATOR = {"operators": ["U0OPS"]}  # the console user, allowed whatever access defaults to


def test_drill_whose_scratch_database_cannot_be_dropped_says_so_and_verifies_nothing(tmp_path, sample_dsn, pg_cluster,
                                                                                     monkeypatch):
    import commands.restore.drill
    import state.jobs
    from commands.pg.restore.databases import drop_database
    from state.jobs import recent_jobs

    console = make_console(make_settings(tmp_path, sample_dsn, access=OPERATOR))
    console.run("/backup")

    def refuse_drop(dsn, name):
        raise psycopg.OperationalError(f'database "{name}" is being accessed by other users')

    finished = []
    real_finish = state.jobs.finish_job
    monkeypatch.setattr(commands.restore.drill, "drop_database", refuse_drop)
    monkeypatch.setattr(state.jobs, "finish_job", lambda store, job_id, status, error=None: (
        finished.append((job_id, status)), real_finish(store, job_id, status, error)))
    out = console.run("/backup verify 1")
    left = scratch_databases(pg_cluster)
    for name in left:
        drop_database(pg_cluster.dsn(), name)

    assert len(left) == 1
    assert "Drill of backup #1 (main) FAILED" in out and "passed" not in out
    assert f"scratch database {left[0]} could NOT be dropped" in out
    assert "is being accessed by other users" in out and "drop it by hand" in out
    assert "Scratch database dropped" not in out
    assert get_backup(console.services.store, 1).verification == "failed verification"
    assert "last verified drill: backup #1" not in console.run("/db-health")
    drill = [j for j in recent_jobs(console.services.store) if j.kind == "drill"]
    assert [j.status for j in drill] == ["failed"] and f"could not drop {left[0]}" in drill[0].error
    assert finished == [(drill[0].id, "failed")]  # one verdict, never failed-then-succeeded


def test_drill_that_fails_and_cannot_drop_reports_both(tmp_path, sample_dsn, pg_cluster, monkeypatch):
    import commands.restore.drill
    from commands.pg.restore.databases import drop_database

    console = make_console(make_settings(tmp_path, sample_dsn, access=OPERATOR))
    console.run("/backup")
    (tmp_path / "backups" / get_backup(console.services.store, 1).key).write_bytes(b"not what was stored")

    def refuse_drop(dsn, name):
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(commands.restore.drill, "drop_database", refuse_drop)
    out = console.run("/backup verify 1")
    for name in scratch_databases(pg_cluster):
        drop_database(pg_cluster.dsn(), name)
    assert "FAILED" in out and "could NOT be dropped: connection refused" in out and "corrupted" in out
    assert get_backup(console.services.store, 1).verification == "failed verification"
