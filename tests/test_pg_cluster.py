"""The throwaway server behaves like a production one where it matters to the bot."""

import os

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from commands.errors import BackupbotError
from commands.pg.cluster import TemporaryCluster, find_pg_bin
from commands.pg.sample_data import SAMPLE_TABLES


def test_the_server_insists_on_the_password(pg_cluster):
    with psycopg.connect(pg_cluster.dsn(), connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "postgres"
    wrong = make_conninfo(pg_cluster.dsn(), password="not-" + pg_cluster.password)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=10)
    without = {k: v for k, v in conninfo_to_dict(pg_cluster.dsn()).items() if k != "password"}
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(make_conninfo(**without, passfile=os.devnull), connect_timeout=10)


def test_the_password_never_reaches_a_command_line(pg_cluster):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert pg_cluster.password.encode() not in f.read()
        except OSError:
            continue


def test_sample_database_has_every_table_with_rows_in_two_schemas(sample_dsn):
    with psycopg.connect(sample_dsn) as conn:
        for table in SAMPLE_TABLES:
            assert conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()[0] > 0, table
        assert conn.execute("SELECT count(*) FROM reporting.daily_revenue").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM reporting.active_users").fetchone()[0] > 0
        foreign_keys = {row[0] for row in conn.execute(
            "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f'")}
        assert {"abandoned_carts", "notifications", "campaigns"} <= foreign_keys


def test_sample_database_keeps_a_not_valid_constraint(sample_dsn):
    with psycopg.connect(sample_dsn) as conn:
        rows = conn.execute("SELECT conname FROM pg_constraint "
                            "WHERE NOT convalidated AND conrelid = 'public.usage_stats'::regclass").fetchall()
    assert rows == [("usage_stats_calls_nonnegative",)]


def test_each_test_gets_its_own_empty_database(pg_cluster, pg_dsn):
    other = pg_cluster.create_database("t_other_fresh")
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_here (id int)")
            mine = conn.execute("SELECT current_database()").fetchone()[0]
        with psycopg.connect(other) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "t_other_fresh" != mine
            assert conn.execute("SELECT to_regclass('public.only_here')").fetchone()[0] is None
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
    finally:
        pg_cluster.drop_database("t_other_fresh")
    assert not pg_cluster.database_exists("t_other_fresh")


def test_a_stopped_cluster_leaves_nothing_behind():
    with TemporaryCluster() as cluster:
        folder, dsn = cluster.dir, cluster.dsn()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SHOW fsync").fetchone()[0] == "off"
    assert not folder.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=3)


def test_missing_binary_is_named_in_the_error():
    with pytest.raises(BackupbotError, match="no_such_pg_program"):
        find_pg_bin("no_such_pg_program")
