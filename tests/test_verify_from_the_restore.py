"""A restore into a database made for it says how many rows it loaded; the bot reads every row again
only for a table whose figure does not match (statistics lag, or track_counts is off)."""

from __future__ import annotations

import psycopg

from commands.pg.restore.databases import create_database, drop_database
from commands.pg.tools import with_dbname
from commands.restore.verify import verify_restored
from state.backups import get_backup
from tests.builders import make_console, make_settings


def test_a_drill_trusts_the_restores_own_inserts_and_still_catches_a_missing_row(tmp_path, sample_dsn, pg_cluster):
    console = make_console(make_settings(tmp_path, sample_dsn))
    console.run("/backup")
    out = console.run("/backup verify latest")
    assert "Drill of backup #1 (main) passed" in out, out
    assert "rows match the backup (9 by the restore's own inserts, 0 counted)" in out, out

    # a database whose statistics say nothing (track_counts off while it was filled): every table is counted,
    # and a row short is caught whatever the statistics say
    record = get_backup(console.services.store, 1)
    name = "verify_without_stats"
    create_database(sample_dsn, name)
    try:
        copy = with_dbname(sample_dsn, name)
        dump = subprocess_dump(sample_dsn)
        with psycopg.connect(copy, autocommit=True) as conn:
            conn.execute("SET track_counts = off")
            conn.execute(dump)
        [counts, _] = verify_restored(copy, record, [], None, fresh=True)
        assert counts.ok and "(0 by the restore's own inserts, 9 counted)" in counts.detail, counts
        with psycopg.connect(copy, autocommit=True) as conn:
            conn.execute("SET track_counts = off")
            conn.execute("DELETE FROM public.users WHERE id = (SELECT min(id) FROM public.users)")
        [counts, _] = verify_restored(copy, record, [], None, fresh=True)
        assert not counts.ok and "public.users: 499 rows, backup had 500" in counts.detail, counts
    finally:
        drop_database(sample_dsn, name)


def subprocess_dump(dsn: str) -> str:
    """The sample database as plain SQL (schema and data), to load by hand."""
    import subprocess

    from commands.pg.tools import pg_bin, pg_env

    text = subprocess.run([pg_bin("pg_dump"), "--no-owner", "--inserts"], env=pg_env(dsn), capture_output=True,
                          text=True, check=True).stdout
    return "\n".join(line for line in text.splitlines() if not line.startswith("\\"))  # psql's \restrict lines
