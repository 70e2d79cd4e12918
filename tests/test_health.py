"""/db-health against a real PostgreSQL in trouble, and against one that never answers."""

from __future__ import annotations

import socket
import threading
import time

import psycopg
import pytest

from tests.builders import make_console, make_settings


@pytest.fixture
def console(tmp_path, sample_dsn):
    return make_console(make_settings(tmp_path, sample_dsn, health={"long_query_warn_seconds": 1,
                                                                   "idle_in_transaction_warn_seconds": 1}))


def test_healthy_database(console):
    console.run("/backup")
    out = console.run("/db-health")
    assert "*main*:" in out
    for section in ("size:", "connections:", "long queries: none", "lock waits: none", "NOT VALID constraints: 1",
                    "cache hit ratio:", "dead tuples:", "pg_stat_statements is not installed", "last backup: #1",
                    "last verified drill: none yet", "storage:"):
        assert section in out, section


def quietly(conn, sql):
    """Run in a thread; the test cancels it at the end, and that error is expected."""
    def run():
        try:
            conn.execute(sql)
        except psycopg.Error:
            pass
    return run


def test_lock_wait_long_query_and_idle_in_transaction(console, sample_dsn):
    holder = psycopg.connect(sample_dsn)
    holder.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")  # idle in transaction, holding a lock
    waiter = psycopg.connect(sample_dsn, autocommit=True)
    blocked = threading.Thread(target=quietly(waiter, "SELECT count(*) FROM public.users"), daemon=True)
    blocked.start()
    sleeper = psycopg.connect(sample_dsn, autocommit=True)
    slow = threading.Thread(target=quietly(sleeper, "SELECT pg_sleep(30)"), daemon=True)
    slow.start()
    time.sleep(2)
    try:
        started = time.monotonic()
        out = console.run("/db-health main")
        assert time.monotonic() - started < 10
        assert "lock waits: 1 blocked" in out and "SELECT count(*) FROM public.users" in out
        assert "long queries: " in out and "pg_sleep(30)" in out
        assert "idle in transaction" in out
        assert "*main*: WARN" in out or "*main*: CRITICAL" in out
    finally:
        holder.rollback()
        holder.close()
        blocked.join(10)
        sleeper.cancel()
        slow.join(10)
        for conn in (waiter, sleeper):
            conn.close()


def test_database_that_never_answers_times_out(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)  # accepts connections, never says a word
    port = silent.getsockname()[1]
    try:
        console = make_console(make_settings(tmp_path, f"postgresql://u:secretpw@127.0.0.1:{port}/app",
                                             health={"connect_timeout_seconds": 2}))
        started = time.monotonic()
        out = console.run("/db-health")
        elapsed = time.monotonic() - started
        assert elapsed < 8, elapsed
        assert "connection: timed out" in out or "connection: unreachable" in out
        assert "*main*: CRITICAL" in out and "secretpw" not in out
    finally:
        silent.close()


def test_unreachable_database(tmp_path):
    console = make_console(make_settings(tmp_path, "postgresql://u:secretpw@127.0.0.1:1/app"))
    out = console.run("/db-health")
    assert "connection: unreachable" in out and "secretpw" not in out


def test_growth_since_previous_sample(console, sample_dsn, tmp_path):
    from datetime import timedelta

    console.run("/db-health")
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE bulk AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 40000) g")
    clock_now = console.services.clock()
    console.services.clock = lambda: clock_now + timedelta(hours=1)
    out = console.run("/db-health")
    assert "% since" in out and "size:" in out


def test_bad_input_and_config(console, tmp_path, sample_dsn):
    assert "unknown database 'nope'" in console.run("/db-health nope")
    assert "too many words" in console.run("/db-health a b")
    bad = make_console(make_settings(tmp_path / "x", sample_dsn, health={"rpo_hourz": 3}))
    assert "health.rpo_hourz: unknown key" in bad.run("/db-health")


def test_db_health_through_slack(tmp_path, sample_dsn, slack_env, fake_slack, start_bot):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env))
    status, _, seconds = bot.slack.command("/db-health", "all", user="U0ANYONE")
    assert status == 200 and seconds < 3
    posted = fake_slack.wait_for_text("*main*:", method="chat.postMessage")
    assert "connections:" in posted["text"] and posted["blocks"][0]["text"]["text"].startswith(":")
