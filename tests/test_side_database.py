"""The side database of a whole restore: made exactly like the target, checked before the swap, swapped with
no gap, and listed among the copies of production data while it is kept (issue #19 item 5)."""

from __future__ import annotations

import http.server
import re
import stat
import threading

import psycopg
from psycopg import sql

from commands.pg.restore.databases import create_database
from commands.pg.restore.side import database_properties, differences, swap_databases
from commands.pg.tools import pg_bin, with_dbname
from tests.builders import make_console, make_settings
from tests.test_restore import approve, content_of, message_id
from tests.test_restore_any_database import ACCESS, _numbers, admin
from tests.test_restore_safety import use_shim


def ensure_role(conn, name: str) -> None:
    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone():
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))


def test_the_side_database_is_made_exactly_like_the_target(pg_cluster):
    name, side = f"like_me_{next(_numbers)}", f"side_of_like_me_{next(_numbers)}"
    with admin(pg_cluster) as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' "
                             "LC_COLLATE 'C' LC_CTYPE 'C.UTF-8' CONNECTION LIMIT 7").format(ident))
        for role in ("side_granter", "side_reader"):
            ensure_role(conn, role)
        # the defaults revoked, PUBLIC's and the owner's own, and a grant made by a role that is not the owner
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
        conn.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM postgres").format(ident))
        conn.execute(sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO side_granter WITH GRANT OPTION").format(ident))
        conn.execute("SET ROLE side_granter")
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO side_reader").format(ident))
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL('ALTER DATABASE {} SET search_path = app, "My Schema"').format(ident))
        conn.execute(sql.SQL("ALTER ROLE side_reader IN DATABASE {} SET work_mem = '3MB'").format(ident))
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS 'exactly this'").format(ident))
        target = database_properties(conn, name)
    create_database(pg_cluster.dsn("postgres"), side, like=name)
    with admin(pg_cluster) as conn:
        made = database_properties(conn, side)
        assert made == target  # every property, the ACL item by item in order, the flags included
        assert "side_reader=c/side_granter" in made.acl and not any(a.startswith("=") for a in made.acl)
        assert made.locale_provider == "i" and made.icu_locale == "de-DE" and made.ctype == "C.UTF-8"
        assert differences(made, target) == []
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS 'changed'").format(sql.Identifier(side)))
        assert differences(database_properties(conn, side), target) == [
            "comment: 'changed' here, 'exactly this' on the target"]
    for db in (name, side):
        pg_cluster.drop_database(db)


def test_a_target_changed_during_the_restore_is_not_swapped(tmp_path, sample_dsn, monkeypatch):
    """A client comments on the target while pg_restore fills the side database: the properties no longer
    match, so the bot refuses the swap, drops the side database and leaves the target as it is."""
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS))
    assert "succeeded" in console.run("/backup")
    dbname = sample_dsn.rsplit("/", 1)[1]
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.notifications")
    before = content_of(sample_dsn)
    kept_before = bot_databases(sample_dsn)  # other tests' requests #1 keep theirs on this cluster
    shim = tmp_path / "bin" / "pg_restore"
    shim.parent.mkdir()
    shim.write_text(f"""#!/bin/bash
{pg_bin('psql')} --no-psqlrc -q -d postgres -c 'COMMENT ON DATABASE "{dbname}" IS '"'changed meanwhile'" || exit 9
exec {pg_bin('pg_restore')} "$@"
""")
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    use_shim(monkeypatch, str(shim))
    out = console.run("/restore latest")
    out += approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "verification failed before the swap, so the target was not touched" in out, out
    assert "database properties: comment: None here, 'changed meanwhile' on the target" in out
    assert content_of(sample_dsn) == before
    assert bot_databases(sample_dsn) == kept_before  # the side database is dropped, nothing is kept


def bot_databases(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute(r"SELECT datname FROM pg_database WHERE datname ~ '^backupbot_(side|prev)_'")}


def test_the_swap_leaves_no_moment_without_the_target_name(pg_cluster):
    """While the two renames happen, another client keeps looking the name up and trying to CREATE DATABASE
    it: the name is never free (both renames are one transaction), and every creation fails."""
    n = next(_numbers)
    target, side, keep = f"swap_target_{n}", f"swap_side_{n}", f"swap_keep_{n}"
    for name in (target, side):
        pg_cluster.create_database(name)
        with psycopg.connect(pg_cluster.dsn(name), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE TABLE marker AS SELECT {} AS what").format(sql.Literal(name)))
    stop, seen_missing, created = threading.Event(), [], []

    def look():
        with psycopg.connect(pg_cluster.dsn("template1"), autocommit=True) as conn:
            while not stop.is_set():
                if conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [target]).fetchone()[0] == 0:
                    seen_missing.append(True)

    def take():
        with psycopg.connect(pg_cluster.dsn("template1"), autocommit=True) as conn:
            while not stop.is_set():
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(target)))
                    created.append(True)
                except psycopg.errors.DuplicateDatabase:
                    pass  # the name was taken when it looked: as it must be
                except psycopg.Error as exc:  # e.g. the unique index: it found the name free, then lost a race
                    seen_missing.append(exc)

    threads = [threading.Thread(target=look), threading.Thread(target=take)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3):  # there and back again, and there
            swap_databases(pg_cluster.dsn("postgres"), target, side, keep)
            swap_databases(pg_cluster.dsn("postgres"), target, keep, side)
        swap_databases(pg_cluster.dsn("postgres"), target, side, keep)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not seen_missing and not created
    with psycopg.connect(pg_cluster.dsn(target)) as conn:
        assert conn.execute("SELECT what FROM marker").fetchone()[0] == side
    with psycopg.connect(pg_cluster.dsn(keep)) as conn:
        assert conn.execute("SELECT what FROM marker").fetchone()[0] == target
    for name in (target, keep):
        pg_cluster.drop_database(name)


class Unhealthy(http.server.BaseHTTPRequestHandler):
    """The app answers 500 and, meanwhile, the maintenance databases stop taking connections: the
    swap back cannot run."""

    dsn = None  # the target's: the two maintenance databases cannot shut themselves

    def do_GET(self):  # noqa: N802 (http.server's name)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("ALTER DATABASE template1 WITH ALLOW_CONNECTIONS false")
            conn.execute("ALTER DATABASE postgres WITH ALLOW_CONNECTIONS false")
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_failed_undo_says_which_database_holds_what_and_drops_nothing(tmp_path, sample_dsn, pg_cluster):
    Unhealthy.dsn = sample_dsn
    server = http.server.HTTPServer(("127.0.0.1", 0), Unhealthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    databases = {"main": {"url_env": "DATABASE_URL", "health_url": f"http://127.0.0.1:{server.server_port}/"}}
    console = make_console(make_settings(tmp_path, sample_dsn, databases=databases, access=ACCESS))
    assert "succeeded" in console.run("/backup")
    source = content_of(sample_dsn)
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.notifications")
    changed = content_of(sample_dsn)
    dbname = sample_dsn.rsplit("/", 1)[1]
    try:
        out = console.run("/restore latest")
        out += approve(console, message_id(out, "Restore request #1"), "U0APP1")
    finally:
        server.shutdown()
        with psycopg.connect(sample_dsn, autocommit=True) as conn:  # the target still takes connections
            conn.execute("ALTER DATABASE postgres WITH ALLOW_CONNECTIONS true")
            conn.execute("ALTER DATABASE template1 WITH ALLOW_CONNECTIONS true")
    previous = re.search(r"is kept as (backupbot_prev_1_[0-9a-f]+)", out).group(1)
    assert "Restore request #1 failed" in out and "putting the previous database back failed" in out, out
    assert (f"{dbname} holds the restored backup #1, {previous} holds {dbname} as it was before; "
            "nothing was dropped") in out
    assert content_of(sample_dsn) == source
    assert content_of(with_dbname(sample_dsn, previous)) == changed
    assert f"{previous} kept (the database it replaced) by restore request #1" in console.run("/backup list")
    pg_cluster.drop_database(previous)


def test_kept_and_copied_databases_are_listed_until_dropped(tmp_path, sample_dsn, pg_cluster, dr_cluster):
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS, env={"DR_URL": dr_cluster.dsn("postgres")},
                                         targets={"dr": {"url_env": "DR_URL"}}))
    assert "succeeded" in console.run("/backup")
    out = console.run("/restore latest")
    out += approve(console, message_id(out, "Restore request #1"), "U0APP1")
    previous = re.search(r"is kept as (backupbot_prev_1_[0-9a-f]+)", out).group(1)
    copy = f"dr_copy_{next(_numbers)}"
    out = console.run(f"/restore latest --to dr --into {copy}")
    out += approve(console, message_id(out, "Restore request #2"), "U0APP1")
    assert "Restore request #2 restored backup #1" in out, out
    listing = console.run("/backup list")
    assert "Copies of production data:" in listing
    assert f"{previous} kept (the database it replaced) by restore request #1" in listing
    assert f"{copy} on target dr created by restore request #2" in listing and "still present" in listing
    pg_cluster.drop_database(previous)
    dr_cluster.drop_database(copy)
    assert "Copies of production data" not in console.run("/backup list")


def test_a_restart_after_a_swap_that_died_half_way_lets_the_target_take_connections(tmp_path, sample_dsn, pg_cluster,
                                                                                     caplog):
    """The bot died with the target's connections shut by the swap: the next start opens the target again,
    drops the side database it had made, and says which kept database holds what (dropping none)."""
    from state import approvals as request_state

    settings = make_settings(tmp_path, sample_dsn, access=ACCESS)
    console = make_console(settings)
    assert "succeeded" in console.run("/backup")
    assert "Restore request #1" in console.run("/restore latest")
    assert request_state.transition(console.services.store, 1, request_state.PENDING, request_state.RUNNING)
    dbname = sample_dsn.rsplit("/", 1)[1]
    pg_cluster.create_database("backupbot_side_1_dead02")
    pg_cluster.create_database("backupbot_prev_1_dead03")  # as if one swap of it had renamed already
    with admin(pg_cluster) as conn:  # where the dead swap stopped
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(dbname)))
    console.services.close()
    restarted = make_console(settings)
    assert request_state.get_request(restarted.services.store, 1).status == "interrupted"
    assert content_of(sample_dsn)  # it takes connections again
    assert not pg_cluster.database_exists("backupbot_side_1_dead02")
    assert f"restore request #1: {dbname} takes connections again" in caplog.text
    assert f"backupbot_prev_1_dead03 holds {dbname} as it was before the restore" in caplog.text
    assert pg_cluster.database_exists("backupbot_prev_1_dead03")
    pg_cluster.drop_database("backupbot_prev_1_dead03")
