"""/db-health against a real PostgreSQL in trouble, and against one that never answers."""

from __future__ import annotations

import socket
import threading
import time

import psycopg
import pytest

from commands.errors import ConfigError
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
        assert "long queries: " in out and "pg_sleep(?)" in out and "pg_sleep(30)" not in out
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
    with pytest.raises(ConfigError) as bad:
        make_settings(tmp_path / "x", sample_dsn, health={"rpo_hourz": 3})
    assert "health.rpo_hourz: unknown key" in str(bad.value)


def test_db_health_through_slack_answers_only_the_asker_unless_posted(tmp_path, sample_dsn, slack_env, fake_slack,
                                                                      start_bot):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env, access={"viewers": ["U0ANYONE"]}))
    status, _, seconds = bot.slack.command("/db-health", "all", user="U0ANYONE")
    assert status == 200 and seconds < 3
    private = fake_slack.wait_for_text("*main*:", method="chat.postEphemeral")
    assert private["user"] == "U0ANYONE" and "connections:" in private["text"]
    assert private["blocks"][0]["text"]["text"].startswith(":")
    assert not [m for m in fake_slack.said("chat.postMessage") if "*main*:" in m["text"]]  # not to the channel
    status, _, _ = bot.slack.command("/db-health", "all --post", user="U0ANYONE")
    posted = fake_slack.wait_for_text("*main*:", method="chat.postMessage")
    assert "connections:" in posted["text"] and posted["blocks"][0]["text"]["text"].startswith(":")


def test_db_health_is_private_by_default_in_the_console(console):
    out = console.run("/db-health")
    assert out.startswith("(only you) ") and "*main*:" in out
    posted = console.run("/db-health main --channel")
    assert posted.startswith("[M") and "*main*:" in posted
    assert "`--post` (or `--channel`) posts it to the channel" in console.run("/db-health a b")


# ---------------------------------------------------------------- who may look, and what they see

from commands.health.query_text import normalize_query  # noqa: E402


@pytest.mark.parametrize("query, shown", [
    ("SELECT * FROM users WHERE email = 'alice@example.com' AND id = 42",
     "SELECT * FROM users WHERE email = ? AND id = ?"),
    ("SELECT pg_sleep(30)", "SELECT pg_sleep(?)"),
    ("UPDATE t1 SET col2 = 3.14e10, c3 = .5, c4 = 0x1F, c5 = -7, c6 = 1_000 WHERE x IN (1, 2,3)",
     "UPDATE t1 SET col2 = ?, c3 = ?, c4 = ?, c5 = -?, c6 = ? WHERE x IN (?, ?,?)"),
    ("SELECT $1, $2 FROM t WHERE a = $3", "SELECT $1, $2 FROM t WHERE a = $3"),  # pg_stat_statements' own
    ('SELECT "we""ird name", "it\'s" FROM "T2"', 'SELECT "we""ird name", "it\'s" FROM "T2"'),  # names, not data
    ("SELECT a$b$ FROM t", "SELECT a$b$ FROM t"),  # $ inside an identifier starts no dollar quote
    ("SELECT 42abc", "SELECT ? abc"),  # before PostgreSQL 15, `42 AS abc`: the alias is a name
    ("select 'a'AS x, 1AS y, x/**/FROM t", "select ? AS x, ? AS y, x FROM t"),
])
def test_query_text_is_shown_without_literals(query, shown):
    assert normalize_query(query) == shown


HOSTILE = [
    "SELECT 'it''s hunter2'",
    "SELECT E'it\\'s hunter2'",
    "SELECT e'\\\\', 'hunter2'",
    "SELECT 'x\\' || 'hunter2'",  # standard_conforming_strings on or off: hidden either way
    "SELECT 'x\\', 'y' || 'hunter2' || 'z'",
    "SELECT $$hunter2$$",
    "SELECT $tag$ a $$ b hunter2 $tag$",
    "SELECT $_hunter$ x $_hunter$, $é$hunter2$é$",
    "SELECT $x$ unterminated hunter2",
    "SELECT 'unterminated hunter2",
    "SELECT E'unterminated \\' hunter2",
    "SELECT B'1010', X'FF', N'hunter2', U&'hunter2 \\0061', u&'hunter2' UESCAPE '!'",
    "SELECT 1 /* hunter2 /* nested */ still hunter2 */ -- and hunter2",
    "SELECT 1 /* unterminated hunter2",
    "SELECT 1 -- hunter2\n, 2",
    "SELECT 'multi\nline\nhunter2'",
    "SELECT 'pässwörd hunter2' AS \"ü\"",
    "SELECT 'a' 'hunter2'",
    "SELECT '\x00hunter2'",
    "SELECT \"unterminated ident hunter2",
    "COPY t FROM PROGRAM 'curl hunter2'",
    "SELECT '" + "x" * 5000 + "hunter2'",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_query_text_shows_no_literal(query):
    shown = normalize_query(query)
    assert "hunter2" not in shown and "\n" not in shown
    assert "hunter" not in shown


def test_db_health_shows_queries_without_their_literals(console, sample_dsn):
    sleeper = psycopg.connect(sample_dsn, autocommit=True)
    slow = threading.Thread(target=quietly(sleeper, "SELECT pg_sleep(30), 'card 4111-1111' AS pan, $x$ssn 078-05$x$, "
                                                    "E'pw \\' hunter2', 31337 AS pin"), daemon=True)
    slow.start()
    time.sleep(2)
    try:
        out = console.run("/db-health")
        assert "long queries: 1 over 1s" in out and "SELECT pg_sleep(?), ? AS pan, ?, ?, ? AS pin" in out
        for secret in ("4111", "078-05", "hunter2", "31337", "pg_sleep(30)"):
            assert secret not in out, secret
    finally:
        sleeper.cancel()
        slow.join(10)
        sleeper.close()


def test_copies_of_production_data_are_listed_until_dropped(tmp_path, sample_dsn, pg_cluster):
    import secrets

    from commands.schedules import build_digest
    from state.approvals import get_request

    access = {"operators": ["U0OPS"], "approvers": ["U0APP1"], "approve_new_database_restores": False}
    console = make_console(make_settings(tmp_path, sample_dsn, access=access))
    console.run("/backup")
    copy = f"copy_{secrets.token_hex(4)}"
    assert "restored backup #1" in console.run(f"/restore 1 --into {copy}")
    row = get_request(console.services.store, 1)
    line = f"{copy} created by restore request #1 on {(row.decided_at or row.created_at)[:10]} — still present"
    try:
        listing = console.run("/backup list")
        assert "Copies of production data:" in listing and line in listing
        assert "#1 · main" in listing  # the backups are listed as before
        assert line in build_digest(console.services).text()
    finally:
        pg_cluster.drop_database(copy)
    assert "Copies of production data" not in console.run("/backup list")
    assert "Copies of production data" not in build_digest(console.services).text()
