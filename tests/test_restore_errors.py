"""What a failed restore's report names: the error that stopped it, not the bot's clean-up of its helpers."""

from __future__ import annotations

import psycopg

from tests.test_restore import approve, console_for, content_of, message_id


def test_psql_stopping_on_an_error_is_what_the_report_names(tmp_path, sample_dsn):
    """psql stops at the first error (ON_ERROR_STOP) while pg_restore still has megabytes to write; the
    bot then kills pg_restore, and the report must show psql's error, not that kill. (A restore of
    tables is the one that pipes pg_restore into psql; a whole one goes through a side database.)"""
    with psycopg.connect(sample_dsn, autocommit=True) as conn:  # enough SQL that pg_restore is still writing
        conn.execute("CREATE TABLE public.bulk AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 150000) g")
    console = console_for(tmp_path, sample_dsn)
    assert "succeeded" in console.run("/backup")
    with psycopg.connect(sample_dsn, autocommit=True) as conn:  # the target refuses writes: psql's first DROP fails
        dbname = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(psycopg.sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
            psycopg.sql.Identifier(dbname)))
    before = content_of(sample_dsn)
    out = console.run("/restore 1 --tables public.bulk")
    out = approve(console, message_id(out, "Restore request #1"), "U0APP2")
    assert "Restore request #1 failed: psql exited with status 3" in out, out
    assert "in a read-only transaction" in out and "cannot execute DROP TABLE" in out
    assert "killed by signal" not in out
    assert content_of(sample_dsn) == before
