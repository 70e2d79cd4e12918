"""/restore as operators and approvers live it, at the console: plan, approvals, restore, verify."""

from __future__ import annotations

import re
import subprocess
import threading
from datetime import timedelta

import psycopg
import pytest

from commands import dispatch
from commands.chat.context import Actor
from commands.pg.tools import pg_bin, pg_env, with_dbname
from state import approvals as request_state
from state.backups import get_backup, list_backups
from state.jobs import recent_jobs
from tests.builders import FakeClock, make_console, make_settings, slack_console_process, store_as_if_pg_dump_wrote

# restores into new databases start at once here; tests/test_restore_safety.py checks the default (approval)
ACCESS = {"operators": ["U0OPS", "U0APP1"], "approvers": ["U0APP1", "U0APP2", "U0APP3"], "required_approvals": 1,
          "approve_new_database_restores": False}


@pytest.fixture
def clock():
    return FakeClock()


def console_for(tmp_path, dsn, clock=None, **access):
    overrides = {"clock": clock} if clock else {}
    return make_console(make_settings(tmp_path, dsn, access={**ACCESS, **access}), **overrides)


def message_id(out: str, needle: str) -> str:
    for line in out.splitlines():
        m = re.match(r"\[(M\d+)\] (.*)", line)
        if m and needle in m.group(2):
            return m.group(1)
    raise AssertionError(f"no message with {needle!r} in:\n{out}")


def schema_of(dsn: str) -> str:
    out = subprocess.run([pg_bin("pg_dump"), "--schema-only", "--no-owner"], capture_output=True, text=True,
                         env=pg_env(dsn), check=True).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict", "--")))


def content_of(dsn: str) -> dict:
    """Every table's rows as an ordered md5, and every sequence's state."""
    with psycopg.connect(dsn) as conn:
        tables = conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
                              "('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
        out = {}
        for schema, table in tables:
            out[f"{schema}.{table}"] = conn.execute(
                f'SELECT count(*), md5(coalesce(string_agg(t::text, \'|\' ORDER BY t::text), \'\')) FROM "{schema}"."{table}" t'
            ).fetchone()
        for schema, seq in conn.execute("SELECT schemaname, sequencename FROM pg_sequences ORDER BY 1, 2").fetchall():
            out[f"seq {schema}.{seq}"] = conn.execute(f'SELECT last_value, is_called FROM "{schema}"."{seq}"').fetchone()
    return out


def approve(console, request_message: str, *users: str) -> str:
    out = ""
    for user in users:
        console.run(f":as {user}")
        out += console.run(f":react {request_message} white_check_mark") + "\n"
    console.run(":as U0OPS")
    return out


@pytest.mark.parametrize("fmt", ["custom", "plain", "gzip"])
def test_each_format_restores_exactly_into_a_new_database(tmp_path, sample_dsn, pg_cluster, fmt):
    console = console_for(tmp_path, sample_dsn)
    assert "succeeded" in console.run(f"/backup --format {fmt}")
    target = f"restored_{fmt}"
    out = console.run(f"/restore 1 --into {target}")
    assert "No approval needed" in out
    assert "Restore request #1 restored backup #1" in out and "row counts: ok" in out
    assert "NOT VALID constraints: ok (1 as in the source)" in out
    target_dsn = with_dbname(sample_dsn, target)
    assert schema_of(target_dsn) == schema_of(sample_dsn)
    assert content_of(target_dsn) == content_of(sample_dsn)
    with psycopg.connect(target_dsn) as conn:  # sequences go on where the source left off
        assert conn.execute("SELECT nextval('public.users_id_seq')").fetchone()[0] == 501


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_restore_over_an_existing_database_after_approval(tmp_path, sample_dsn, fmt):
    console = console_for(tmp_path, sample_dsn)
    console.run(f"/backup --format {fmt}")
    before = content_of(sample_dsn), schema_of(sample_dsn)
    with psycopg.connect(sample_dsn, autocommit=True) as conn:  # the incident: data lost, schemas changed
        conn.execute("DELETE FROM public.abandoned_carts; UPDATE public.users SET name = 'oops'; "
                     "DROP TABLE reporting.daily_revenue CASCADE; CREATE TABLE reporting.junk (x int); "
                     "CREATE SCHEMA scratch; CREATE TABLE scratch.t (x int)")
    out = console.run("/restore 1")
    request = message_id(out, "Restore request #1")
    assert "Safety snapshot first: yes" in out and "Waiting for 1 approval(s)" in out
    out = approve(console, request, "U0APP2")
    assert "@U0APP2 approved (1/1)" in out
    assert "(pre-restore)" in out and "safety snapshot: backup #" in out
    assert "Restore request #1 restored backup #1" in out
    assert "How: side database" in out  # a whole restore replaces the whole database (commands.restore.rules)
    previous = re.search(r"is kept as (backupbot_prev_1_[0-9a-f]+)", out).group(1)
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        # the database is the backup's, whole: a schema the backup does not know is gone from it too
        assert conn.execute("SELECT to_regnamespace('scratch')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('reporting.junk')").fetchone()[0] is None
    with psycopg.connect(with_dbname(sample_dsn, previous)) as conn:  # ... and kept in the replaced database
        assert conn.execute("SELECT count(*) FROM scratch.t").fetchone()[0] == 0
    assert (content_of(sample_dsn), schema_of(sample_dsn)) == before
    [snapshot] = [r for r in list_backups(console.services.store) if r.kind == "pre-restore"]
    assert "before restore request #1" in snapshot.note
    assert snapshot.row_counts["public.abandoned_carts"] == 0  # it holds the state before the restore


def test_table_restore_brings_indexes_and_constraints(tmp_path, sample_dsn):
    console = console_for(tmp_path, sample_dsn)
    console.run("/backup")
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX public.abandoned_carts_user_idx; "
                     "ALTER TABLE public.abandoned_carts DROP CONSTRAINT abandoned_carts_user_id_fkey; "
                     "DELETE FROM public.abandoned_carts WHERE id <= 100; UPDATE public.users SET name = 'kept'")
    out = console.run("/restore 1 --tables abandoned_carts")
    assert "tables public.abandoned_carts in" in out
    out = approve(console, message_id(out, "Restore request #1"), "U0APP3")
    assert "Restore request #1 restored backup #1" in out, out
    with psycopg.connect(sample_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.abandoned_carts").fetchone()[0] == 800
        assert conn.execute("SELECT to_regclass('public.abandoned_carts_user_idx')").fetchone()[0] is not None
        fk = "SELECT count(*) FROM pg_constraint WHERE conname = 'abandoned_carts_user_id_fkey'"
        assert conn.execute(fk).fetchone()[0] == 1
        # other tables were not touched
        assert conn.execute("SELECT DISTINCT name FROM public.users").fetchall() == [("kept",)]


def test_table_restore_needs_a_custom_backup(tmp_path, sample_dsn):
    console = console_for(tmp_path, sample_dsn)
    console.run("/backup --format plain")
    out = console.run("/restore 1 --tables users")
    assert "--tables needs a custom-format backup" in out and "(only you)" in out
    assert "--jobs needs a custom-format backup" in console.run("/restore 1 --jobs 2")


def test_parallel_restore_with_jobs(tmp_path, sample_dsn):
    console = console_for(tmp_path, sample_dsn)
    console.run("/backup")
    out = console.run("/restore latest --jobs 2 --into parallel_copy")
    assert "2 parallel jobs" in out and "Restore request #1 restored backup #1" in out
    assert content_of(with_dbname(sample_dsn, "parallel_copy")) == content_of(sample_dsn)


def test_corrupted_artifact_is_refused_before_the_target_is_touched(tmp_path, sample_dsn, reliability):
    console = console_for(tmp_path, sample_dsn)
    console.run("/backup")
    record = get_backup(console.services.store, 1)
    artifact = tmp_path / "backups" / record.key
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    before = content_of(sample_dsn)
    out = console.run("/restore 1")
    assert "backup #1 is corrupted" in out and "(only you)" in out
    assert request_state.get_request(console.services.store, 1) is None
    out = console.run("/restore 1 --into never_created")
    assert "corrupted" in out
    with psycopg.connect(sample_dsn) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'never_created'").fetchone() is None
    assert content_of(sample_dsn) == before
    reliability("faults", "one flipped byte in a stored artifact", 2,
                "refused as corrupted before any request or database is created; target unchanged")



def test_failing_restore_leaves_target_as_it_was_and_offers_no_rollback(tmp_path, sample_dsn, reliability):
    console = console_for(tmp_path, sample_dsn)
    console.run("/backup")
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.notifications WHERE id > 10")
        # an event trigger outside the dump's schemas makes the restore fail half-way through
        conn.execute("""CREATE SCHEMA guard;
            CREATE FUNCTION guard.refuse() RETURNS event_trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() WHERE object_identity = 'public.analytics') THEN
                    RAISE EXCEPTION 'analytics may not be created today';
                END IF;
            END $$;
            CREATE EVENT TRIGGER refuse_analytics ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
                EXECUTE FUNCTION guard.refuse()""")
    before = content_of(sample_dsn), schema_of(sample_dsn)
    # a restore of tables runs in the target, in one transaction (a whole one would go to a side database)
    out = console.run("/restore 1 --tables analytics")
    out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "Restore request #1 failed: psql exited with status 3" in out, out
    assert "analytics may not be created today" in out
    assert "nothing was changed" in out
    # nothing was committed, so a rollback would only throw away writes made since the snapshot
    assert "Rollback to the safety snapshot" not in out and "Restore request #2" not in out
    assert (content_of(sample_dsn), schema_of(sample_dsn)) == before  # one transaction: nothing changed
    assert request_state.get_request(console.services.store, 1).status == "failed"
    assert request_state.get_request(console.services.store, 2) is None
    reliability("faults", "restore failing half-way (event trigger raises)", 1,
                "one transaction: target exactly as before; no rollback offered (nothing to undo)")


def test_restore_committed_but_app_unhealthy_offers_a_rollback(tmp_path, sample_dsn):
    databases = {"main": {"url_env": "DATABASE_URL", "health_url": "http://127.0.0.1:1/healthz"}}  # nobody answers
    console = make_console(make_settings(tmp_path, sample_dsn, databases=databases, access=ACCESS))
    console.run("/backup")
    out = console.run("/restore 1 --tables abandoned_carts")  # restored in place, in one transaction, committed
    out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "Restore request #1 failed: verification failed: health URL" in out, out
    assert "Rollback to the safety snapshot taken before restore request #1" in out
    assert "Restore request #2" in out and "Waiting for 1 approval(s)" in out
    snapshot = get_backup(console.services.store, request_state.get_request(console.services.store, 2).plan["backup_id"])
    assert snapshot.kind == "pre-restore"
    # a whole restore is swapped in, and swapped back when the app is unhealthy: nothing to roll back
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("UPDATE public.users SET name = 'after the backup'")
    before = content_of(sample_dsn)
    out = console.run("/restore 1")
    out = approve(console, message_id(out, "Restore request #3"), "U0APP1")
    assert "Restore request #3 failed" in out and "the previous database was put back in place" in out, out
    assert "Rollback to the safety snapshot taken before restore request #3" not in out
    assert content_of(sample_dsn) == before


def test_non_approvers_and_the_requester_do_not_count(tmp_path, sample_dsn, reliability):
    console = console_for(tmp_path, sample_dsn, required_approvals=2)
    console.run("/backup")
    request = message_id(console.run("/restore 1"), "Restore request #1")
    out = approve(console, request, "U0STRANGER")
    assert "@U0STRANGER is not an approver; their reaction is ignored." in out
    assert "is not an approver" not in approve(console, request, "U0STRANGER")  # said once
    console.run(":as U0OPS")
    out = console.run(f":react {request} white_check_mark")
    assert "@U0OPS asked for this restore, so their own reaction does not count" in out
    console.run(f":unreact {request} white_check_mark")
    assert "does not count" not in console.run(f":react {request} white_check_mark")
    assert request_state.get_request(console.services.store, 1).status == "pending"
    # quorum: two distinct approvers; the same approver twice is one vote
    out = approve(console, request, "U0APP1")
    assert "@U0APP1 approved (1/2)" in out
    console.run(":as U0APP1")
    console.run(f":unreact {request} white_check_mark")
    out = console.run(f":react {request} white_check_mark")
    assert "(1/2)" in out and "restored backup" not in out
    out = approve(console, request, "U0APP2")
    assert "@U0APP2 approved (2/2)" in out and "Restore request #1 restored backup #1" in out
    reliability("authority", "approval reactions from a non-approver (twice) and from the requester", 3,
                "ignored; the thread says so once per person; two distinct approvers needed")



def test_withdrawal_and_rejection(tmp_path, sample_dsn, reliability):
    console = console_for(tmp_path, sample_dsn, required_approvals=2)
    console.run("/backup")
    request = message_id(console.run("/restore 1"), "Restore request #1")
    approve(console, request, "U0APP1")
    console.run(":as U0APP1")
    out = console.run(f":unreact {request} white_check_mark")
    assert "@U0APP1 withdrew their approval (0/2)" in out
    approve(console, request, "U0APP2")
    assert request_state.get_request(console.services.store, 1).status == "pending"
    console.run(":as U0APP3")
    out = console.run(f":react {request} x")
    assert "@U0APP3 rejected restore request #1" in out and "REJECTED" in out
    out = approve(console, request, "U0APP1")
    assert "is rejected" in out and "restored backup" not in out
    assert request_state.get_request(console.services.store, 1).status == "rejected"
    reliability("authority", "approval after an approver rejected", 1, "does not count; nothing restored")



def test_expiry_with_an_injected_clock(tmp_path, sample_dsn, clock, reliability):
    console = console_for(tmp_path, sample_dsn, clock=clock, approval_ttl_minutes=30)
    console.run("/backup")
    request = message_id(console.run("/restore 1"), "Restore request #1")
    clock.now += timedelta(minutes=29)
    from bot.console import ConsoleReply
    from commands.restore.requests import expire_requests

    assert expire_requests(console.services, ConsoleReply(console, Actor("U0OPS", "C0OPS"))) == []
    clock.now += timedelta(minutes=2)
    out = approve(console, request, "U0APP1")
    assert "EXPIRED" in out and "restored backup" not in out
    assert request_state.get_request(console.services.store, 1).status == "expired"
    reliability("authority", "approval after the request expired", 1, "message says EXPIRED; nothing restored")



def test_cancel(tmp_path, sample_dsn, reliability):
    console = console_for(tmp_path, sample_dsn)
    console.run("/backup")
    request = message_id(console.run("/restore 1"), "Restore request #1")
    out = console.run("/restore cancel 1")
    assert "CANCELLED" in out and "Restore request #1 is cancelled." in out
    out = approve(console, request, "U0APP1")
    assert "is cancelled" in out and "restored backup" not in out
    assert "only a pending request can be cancelled" in console.run("/restore cancel 1")
    assert "there is no restore request #9" in console.run("/restore cancel 9")
    reliability("authority", "approval on a cancelled request", 1, "does not count; nothing restored")



def test_duplicated_event_and_racing_approvals_start_one_restore(tmp_path, sample_dsn, reliability):
    console = console_for(tmp_path, sample_dsn, required_approvals=2)
    console.run("/backup")
    request = message_id(console.run("/restore 1"), "Restore request #1")
    approve(console, request, "U0APP1")
    from bot.console import ConsoleReply

    def react(user, event_id):
        event = dispatch.ReactionEvent(event_id=event_id, user=user, emoji="white_check_mark", added=True,
                                       channel="C0OPS", message_id=console.messages[request].stored_id)
        dispatch.run_reaction(console.services, event, ConsoleReply(console, Actor(user, "C0OPS")))

    threads = [threading.Thread(target=react, args=(user, f"Ev-{user}")) for user in ("U0APP2", "U0APP3")]
    threads += [threading.Thread(target=react, args=("U0APP2", "Ev-U0APP2")) for _ in range(2)]  # redelivered
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    restores = [j for j in recent_jobs(console.services.store) if j.kind == "restore"]
    assert len(restores) == 1 and restores[0].status == "succeeded"
    assert request_state.get_request(console.services.store, 1).status == "succeeded"
    assert len([r for r in list_backups(console.services.store) if r.kind == "pre-restore"]) == 1
    reliability("delivery", "two final approvals and a redelivered event on threads at once", 4,
                "one restore, one safety snapshot")



def test_restore_refused_without_approvers_and_for_non_operators(tmp_path, sample_dsn, reliability):
    console = make_console(make_settings(tmp_path, sample_dsn))
    console.run("/backup")
    assert "/restore is disabled until approvers are configured" in console.run("/restore 1")
    console = console_for(tmp_path / "b", sample_dsn)
    console.user = "U0STRANGER"
    assert "is not an operator" in console.run("/restore latest")
    reliability("authority", "restore asked with no approvers configured, and by a non-operator", 2, "refused with a reason")



def test_bad_restore_input(tmp_path, sample_dsn):
    console = console_for(tmp_path, sample_dsn)
    console.run("/backup")
    for line, expected in [
        ("/restore", "Usage:"),
        ("/restore abc", "is not a backup number"),
        ("/restore 99", "there is no backup #99"),
        ("/restore 1 --into 'x; DROP DATABASE app'", "is not a database name"),
        ("/restore 1 --into Bad-Name", "is not a database name"),
        ("/restore 1 --jobs 0", "--jobs must be between 1 and 16"),
        ("/restore 1 --tables nosuch", "no table 'nosuch'"),
        ("/restore 1 nosuchdb", "unknown database 'nosuchdb'"),
    ]:
        out = console.run(line)
        assert expected in out, (line, out)
    assert request_state.get_request(console.services.store, 1) is None


def test_pending_request_survives_a_restart(tmp_path, sample_dsn, clock):
    settings = make_settings(tmp_path, sample_dsn, access=ACCESS)
    console = make_console(settings, clock=clock)
    console.run("/backup")
    request = message_id(console.run("/restore 1"), "Restore request #1")
    console.services.close()  # the first process stops
    restarted = make_console(settings, clock=clock)  # a new process on the same state
    restarted.messages = console.messages
    out = approve(restarted, request, "U0APP1")
    assert "Restore request #1 restored backup #1" in out


def test_bot_killed_mid_restore_then_restarted(tmp_path, sample_dsn, reliability):
    import time

    settings = make_settings(tmp_path, sample_dsn, access=ACCESS)
    config = tmp_path / "bot.toml"
    config.write_text(f'[state]\npath = "{settings.state_path}"\n[storage]\nurl = "{settings.storage_url}"\n'
                      '[access]\noperators = ["U0OPS"]\napprovers = ["U0APP1"]\n')
    before = content_of(sample_dsn), schema_of(sample_dsn)
    bot = slack_console_process(config, sample_dsn)  # it approves from inside the process this test kills
    bot.stdin.write(b"/backup\n/restore 1 --tables abandoned_carts\n")  # in the target, in one transaction
    bot.stdin.flush()
    lock = psycopg.connect(sample_dsn)
    deadline = time.monotonic() + 60
    from state import Store

    store = Store(settings.state_path)
    while time.monotonic() < deadline and not request_state.get_request(store, 1):  # the request is posted
        time.sleep(0.1)
    lock.execute("SELECT count(*) FROM public.abandoned_carts")  # ACCESS SHARE held until rollback
    bot.stdin.write(b":as U0APP1\n:react M2 white_check_mark\n")
    bot.stdin.flush()
    with psycopg.connect(sample_dsn, autocommit=True) as admin:
        waiting = 0
        while time.monotonic() < deadline:
            waiting = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone()[0]
            if waiting:
                break
            time.sleep(0.05)
        assert waiting, "the restore never reached the target"
    bot.kill()
    bot.wait()
    time.sleep(0.5)  # the kernel kills psql and pg_restore with their parent; PostgreSQL rolls back
    lock.rollback()
    lock.close()

    restarted = make_console(settings)
    assert [j.kind for j in restarted.services.interrupted_jobs] == ["restore"]
    assert request_state.get_request(restarted.services.store, 1).status == "interrupted"
    assert (content_of(sample_dsn), schema_of(sample_dsn)) == before
    with psycopg.connect(sample_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('psql', 'pg_restore')"
                            ).fetchone()[0] == 0
    reliability("faults", "bot killed with SIGKILL mid-restore, then restarted", 1,
                "psql/pg_restore die with it; transaction rolled back; request and job marked interrupted")


def test_failed_restore_into_a_new_database_removes_it(tmp_path, sample_dsn, pg_cluster):
    console = console_for(tmp_path, sample_dsn)
    console.run("/backup --format plain")
    record = get_backup(console.services.store, 1)
    artifact = tmp_path / "backups" / record.key
    broken = artifact.read_bytes().replace(b"CREATE TABLE public.users", b"SELECT 1/0; CREATE TABLE public.users", 1)
    store_as_if_pg_dump_wrote(console, 1, broken)
    out = console.run("/restore 1 --into fresh_copy")
    assert "Restore request #1 failed: psql exited with status 3" in out and "division by zero" in out
    assert not pg_cluster.database_exists("fresh_copy")
    assert "Rollback" not in out  # nothing was replaced, so there is nothing to roll back
