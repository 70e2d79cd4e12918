"""A drill's receipt: RTO, MB/s, pg_amcheck, each smoke_sql assertion, and what was dropped after."""

from __future__ import annotations

import psycopg
import pytest

from commands.errors import ConfigError
from commands.restore.deep_verify import deep_verify
from state.backups import get_backup
from tests.builders import make_console, make_settings
from tests.test_drills import scratch_databases


def drill_console(tmp_path, dsn, smoke_sql):
    return make_console(make_settings(tmp_path, dsn, databases={"main": {"url_env": "DATABASE_URL",
                                                                         "smoke_sql": smoke_sql}}))


def extensions(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT extname FROM pg_extension ORDER BY 1")]


def test_the_receipt_names_rto_rate_amcheck_each_assertion_and_what_was_dropped(tmp_path, sample_dsn, pg_cluster):
    console = drill_console(tmp_path, sample_dsn, ["SELECT count(*) = 500 FROM users",
                                                   "SELECT bool_and(price_cents >= 0) FROM products"])
    console.run("/backup")
    out = console.run("/backup verify latest")
    assert "Drill of backup #1 (main) passed" in out and "(RTO)" in out and " MB/s" in out, out
    assert "• row counts: ok (9 tables, " in out and "• NOT VALID constraints: ok (1 as in the source)" in out
    assert "• amcheck: ok (9 tables and 15 B-tree indexes, heap and --heapallindexed: no corruption" in out
    assert "• assertion `SELECT count(*) = 500 FROM users`: ok (true)" in out
    assert "• assertion `SELECT bool_and(price_cents >= 0) FROM products`: ok (true)" in out
    assert "• dropped after: scratch database backupbot_drill_1_" in out
    assert scratch_databases(pg_cluster) == []
    assert get_backup(console.services.store, 1).verification == "verified"
    assert "amcheck" not in extensions(sample_dsn)


def test_a_false_failing_or_writing_assertion_fails_the_drill(tmp_path, sample_dsn, pg_cluster):
    console = drill_console(tmp_path, sample_dsn, ["SELECT count(*) = 0 FROM users", "SELECT 1/0 = 1",
                                                   "SELECT count(*) > 0 FROM no_such_table",
                                                   "DELETE FROM users RETURNING true", "SELECT NULL::boolean"])
    console.run("/backup")
    out = console.run("/backup verify latest")
    assert "Drill of backup #1 (main) FAILED: assertion `SELECT count(*) = 0 FROM users`: returned False" in out, out
    assert "• assertion `SELECT 1/0 = 1`: FAILED (division by zero)" in out
    assert '• assertion `SELECT count(*) > 0 FROM no_such_table`: FAILED (relation "no_such_table" does not exist' in out
    # assertions run read-only: one that writes fails and changes nothing
    assert "• assertion `DELETE FROM users RETURNING true`: FAILED (cannot execute DELETE in a read-only transaction)" in out
    assert "• assertion `SELECT NULL::boolean`: FAILED (returned None, not true)" in out
    assert "• amcheck: ok" in out and "• dropped after: scratch database" in out
    assert get_backup(console.services.store, 1).verification == "failed verification"
    assert scratch_databases(pg_cluster) == []


def test_amcheck_finds_an_index_that_disagrees_with_its_table(tmp_path, sample_dsn, pg_cluster):
    """An expression index over a function declared IMMUTABLE that is not (it reads a setting, which the
    restore's session sets differently): the restored index disagrees with the table. The row counts
    match; only amcheck's --heapallindexed sees it."""
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION public.tagged(i bigint) RETURNS text IMMUTABLE LANGUAGE sql "
                     "AS $$ SELECT i::text || current_setting('maintenance_work_mem') $$")
        conn.execute("CREATE INDEX users_tagged_idx ON public.users (public.tagged(id))")
    console = make_console(make_settings(tmp_path, sample_dsn))
    console.run("/backup")
    out = console.run("/backup verify latest")
    assert "Drill of backup #1 (main) FAILED: amcheck: pg_amcheck exited with status" in out, out
    assert "• row counts: ok" in out and "lacks matching index tuple" in out and "users_tagged_idx" in out
    assert get_backup(console.services.store, 1).verification == "failed verification"
    assert scratch_databases(pg_cluster) == []


@pytest.mark.parametrize("had_amcheck", [False, True])
def test_deep_verify_leaves_the_extensions_as_it_found_them(pg_cluster, sample_dsn, had_amcheck):
    """What a side-database restore calls before its swap: the database that becomes production keeps
    exactly the extensions it had."""
    if had_amcheck:
        with psycopg.connect(sample_dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION amcheck")
    before = extensions(sample_dsn)
    dbname = sample_dsn.rsplit("/", 1)[-1]  # the fixture builds postgresql://.../NAME
    checks = deep_verify(pg_cluster.dsn(), dbname, ["SELECT true"])
    assert [(c.name, c.ok) for c in checks] == [("amcheck", True), ("assertion `SELECT true`", True)]
    assert extensions(sample_dsn) == before


def test_smoke_sql_must_be_a_list_of_queries(tmp_path, sample_dsn):
    with pytest.raises(ConfigError, match=r"databases.main.smoke_sql: expected a list of SQL queries"):
        make_settings(tmp_path, sample_dsn, databases={"main": {"url_env": "DATABASE_URL", "smoke_sql": "SELECT true"}})
    with pytest.raises(ConfigError, match=r"databases.main.smoke_sql"):
        make_settings(tmp_path, sample_dsn, databases={"main": {"url_env": "DATABASE_URL", "smoke_sql": [""]}})


def test_without_a_superuser_the_amcheck_line_fails_and_says_why(pg_cluster):
    """amcheck is not a trusted extension: a bot role that cannot install it gets a failed amcheck line
    naming the reason, never a drill that passes unchecked."""
    from psycopg.conninfo import make_conninfo

    with pg_cluster.admin() as conn:
        conn.execute("DROP DATABASE IF EXISTS amcheck_plain_owner")
        conn.execute("DROP ROLE IF EXISTS amcheck_plain")
        conn.execute("CREATE ROLE amcheck_plain LOGIN CREATEDB PASSWORD 'plain-pw'")
        conn.execute("CREATE DATABASE amcheck_plain_owner OWNER amcheck_plain")
    try:
        dsn = make_conninfo(pg_cluster.dsn(), user="amcheck_plain", password="plain-pw")
        [check] = deep_verify(dsn, "amcheck_plain_owner", [])
        assert check.name == "amcheck" and not check.ok
        assert 'permission denied to create extension "amcheck"' in check.detail, check.detail
        assert "plain-pw" not in check.detail
    finally:
        with pg_cluster.admin() as conn:
            conn.execute("DROP DATABASE amcheck_plain_owner")
            conn.execute("DROP ROLE amcheck_plain")
