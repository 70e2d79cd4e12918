"""A whole restore of any database pg_dump can dump, every format and every way, against a hand-made baseline.

The fixture (tests/fixtures/every_object_kind.sql) holds every object kind issue #19 names, the ones
outside every schema included. Each test backs it up with the bot, makes the baseline by hand exactly
as the issue says (`pg_dump -Fc | pg_restore` into a new database), changes the target the way an
incident would, restores through the bot, and compares `pg_dump` of the result with the baseline's.
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from commands.pg.restore.side import database_properties
from commands.pg.tools import pg_bin, pg_env
from state import approvals as request_state
from state.backups import get_backup
from tests.builders import make_console, make_settings, store_as_if_pg_dump_wrote
from tests.test_restore import approve, message_id

FIXTURE = Path(__file__).parent / "fixtures" / "every_object_kind.sql"
ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1"], "required_approvals": 1,
          "approve_new_database_restores": False}
_numbers = itertools.count(1)


def admin(cluster) -> psycopg.Connection:
    return psycopg.connect(cluster.dsn("postgres"), autocommit=True)


def create_target(cluster, name: str) -> str:
    """A database unlike a default one in everything outside it: ICU, revoked PUBLIC defaults, grants,
    settings (for everyone and per role), a comment and a connection limit."""
    with admin(cluster) as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
                             "LC_COLLATE 'C' LC_CTYPE 'C' CONNECTION LIMIT 40").format(ident))
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'fixture_reader'").fetchone():
            conn.execute("CREATE ROLE fixture_reader")
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO fixture_reader").format(ident))
        conn.execute(sql.SQL("ALTER DATABASE {} SET work_mem = '12MB'").format(ident))
        conn.execute(sql.SQL("ALTER DATABASE {} SET search_path = app, public").format(ident))
        conn.execute(sql.SQL("ALTER ROLE fixture_reader IN DATABASE {} SET statement_timeout = '5s'").format(ident))
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS 'the fixture database'").format(ident))
    return cluster.dsn(name)


def load_fixture(dsn: str) -> None:
    subprocess.run([pg_bin("psql"), "--no-psqlrc", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(FIXTURE)],
                   env=pg_env(dsn), check=True, capture_output=True)


def baseline(cluster, source_dsn: str, tmp_path: Path) -> str:
    """What the issue compares with: `pg_dump -Fc | pg_restore` from the same state into a new database."""
    name = f"baseline_{next(_numbers)}"
    archive = tmp_path / "baseline.dump"
    subprocess.run([pg_bin("pg_dump"), "-Fc", "-f", str(archive)], env=pg_env(source_dsn), check=True)
    cluster.create_database(name, template="template0")
    subprocess.run([pg_bin("pg_restore"), "--exit-on-error", "-d", name, str(archive)],
                   env=pg_env(cluster.dsn(name)), check=True)
    return cluster.dsn(name)


def dump_of(dsn: str) -> str:
    """The whole database as pg_dump writes it (schema, data, large objects, everything outside schemas)."""
    out = subprocess.run([pg_bin("pg_dump")], env=pg_env(dsn), capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict", "--")))


def break_it(dsn: str) -> None:
    """The incident: rows lost, a large object unlinked, objects outside schemas changed, junk added."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP PUBLICATION every_measurement; DELETE FROM app.vehicles; UPDATE app.measurements SET "
                     "mood = 'sad'; SELECT lo_unlink(424242); DROP EVENT TRIGGER note_ddl; CREATE EXTENSION citext; "
                     "CREATE TABLE app.junk (x int); CREATE SCHEMA scratch; SELECT lo_from_bytea(0, 'junk')")


def console_for(tmp_path, dsn, env=None, **sections):
    return make_console(make_settings(tmp_path, dsn, access=ACCESS, env=env, **sections))


def restore(console, command: str) -> str:
    out = console.run(command)
    if "Waiting for 1 approval" in out:
        out += approve(console, message_id(out, "Restore request #"), "U0APP1")
    return out


def properties(cluster, name: str):
    with admin(cluster) as conn:
        return database_properties(conn, name)


KINDS = ["CREATE EXTENSION IF NOT EXISTS hstore", "CREATE EXTENSION IF NOT EXISTS postgres_fdw", "CREATE TRANSFORM",
         "CREATE CAST", "CREATE FOREIGN DATA WRAPPER bare_wrapper", "CREATE SERVER elsewhere", "CREATE USER MAPPING",
         "CREATE PUBLICATION", "CREATE SUBSCRIPTION", "CREATE EVENT TRIGGER", "CREATE ACCESS METHOD",
         "SELECT pg_catalog.lo_create('424242')", "COMMENT ON LARGE OBJECT 424242", "ATTACH PARTITION app.measurements_2025",
         "INHERITS (app.vehicles)", "CREATE DOMAIN app.positive_money", "CREATE RULE", "CREATE POLICY",
         "ENABLE ROW LEVEL SECURITY", "CREATE MATERIALIZED VIEW"]
WAYS = [("custom", "in place", ""), ("custom", "in place", "--jobs 1"), ("plain", "in place", ""),
        ("gzip", "in place", ""), ("custom", "--jobs", "--jobs 3"),
        ("custom", "--into", "--into {new}"), ("plain", "--into", "--into {new}"), ("gzip", "--into", "--into {new}"),
        ("custom", "--to", "--to dr"), ("plain", "--to", "--to dr"), ("gzip", "--to", "--to dr --into {new}")]


@pytest.mark.parametrize(("fmt", "way", "flags"), WAYS, ids=[f"{f}-{w}-{x or 'default'}" for f, w, x in WAYS])
def test_every_object_kind_round_trips_like_pg_restore(tmp_path, pg_cluster, dr_cluster, fmt, way, flags):
    n = next(_numbers)
    name = f"anydb_{n}"
    dsn = create_target(pg_cluster, name)
    load_fixture(dsn)
    console = console_for(tmp_path, dsn, env={"DR_URL": dr_cluster.dsn("postgres")}, targets={"dr": {"url_env": "DR_URL"}})
    assert "Backup #1 of main succeeded" in console.run(f"/backup --format {fmt}")
    expected = dump_of(baseline(pg_cluster, dsn, tmp_path))
    for kind in KINDS:  # the baseline holds every kind, so the comparison below covers each of them
        assert kind in expected, kind
    new = f"anydb_copy_{n}"
    cluster, restored = pg_cluster, name
    if way == "--to":
        cluster = dr_cluster
        restored = new if "--into" in flags else name
        if "--into" not in flags:  # over an existing database on the DR server, changed since
            load_fixture(create_target(dr_cluster, name))
            break_it(dr_cluster.dsn(name))
    elif way == "--into":
        restored = new
    else:
        break_it(dsn)
    before = properties(cluster, restored) if restored == name else None
    out = restore(console, f"/restore 1 {flags.format(new=new)}")
    assert "Restore request #1 restored backup #1" in out, out
    if before is not None:  # a whole restore over a database: the side database, and it says why
        assert "How: side database" in out and "outside every schema" in out
        assert f"swap: {restored} is the restored database" in out
        assert properties(cluster, restored) == before  # locale, ACL, settings, comment, limit: the target's
    assert dump_of(cluster.dsn(restored)) == expected


def test_an_extension_the_server_lacks_is_refused_before_anyone_is_asked(tmp_path, sample_dsn):
    console = console_for(tmp_path, sample_dsn)
    assert "succeeded" in console.run("/backup --format plain")
    record = get_backup(console.services.store, 1)
    root = Path(console.services.settings.storage_url.removeprefix("file://"))
    dump = (root / record.key).read_bytes()
    needs = (b"--\n-- Name: no_such_extension; Type: EXTENSION; Schema: -; Owner: -\n--\n\n"
             b"CREATE EXTENSION IF NOT EXISTS no_such_extension WITH SCHEMA public;\n\n")
    store_as_if_pg_dump_wrote(console, 1, dump.replace(b"SET default_tablespace", needs + b"SET default_tablespace", 1))
    for command in ("/restore 1", "/restore 1 --into fresh_copy"):  # over the database, or into a new one
        out = console.run(command)
        assert "backup #1 needs extension(s) no_such_extension, which main's server does not have installed" in out, out
    assert request_state.get_request(console.services.store, 1) is None


def test_superuser_only_objects_are_refused_before_anyone_is_asked_for_a_non_superuser(tmp_path, pg_cluster):
    """The bot's role owns the database and may create databases, but is no superuser: a backup holding an
    event trigger cannot be restored whole by it, which the plan says at once."""
    n = next(_numbers)
    role, password, name = f"anydb_bot_{n}", secrets.token_hex(8), f"anydb_owned_{n}"
    with admin(pg_cluster) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(role)))
    dsn = f"postgresql://{role}:{password}@{pg_cluster.host}:{pg_cluster.port}/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, t text); INSERT INTO notes VALUES (1, 'x')")
        conn.execute("CREATE FUNCTION note_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN NULL; END $$")
    with psycopg.connect(pg_cluster.dsn(name), autocommit=True) as conn:
        conn.execute("CREATE EVENT TRIGGER note_ddl ON ddl_command_end EXECUTE FUNCTION note_ddl()")
    console = console_for(tmp_path, dsn)
    assert "succeeded" in console.run("/backup")
    out = console.run("/restore 1")
    assert ("backup #1 holds objects only a superuser may create (EVENT TRIGGER note_ddl); the bot's role on "
            "main's server is not one") in out, out
    assert request_state.get_request(console.services.store, 1) is None
    with psycopg.connect(pg_cluster.dsn(name), autocommit=True) as conn:  # without it, the same role restores whole
        conn.execute("DROP EVENT TRIGGER note_ddl")
    assert "succeeded" in console.run("/backup")
    out = restore(console, "/restore 2")
    assert "Restore request #1 restored backup #2" in out, out
    pg_cluster.drop_database(name)
    with admin(pg_cluster) as conn:
        for db in conn.execute("SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles "
                               "WHERE rolname = %s)", [role]).fetchall():
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db[0])))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_role_that_cannot_create_or_rename_databases_is_refused_before_anyone_is_asked(tmp_path, pg_cluster):
    """The side database is created, then renamed over the target: a role without CREATEDB is told at once."""
    n = next(_numbers)
    role, password, name = f"anydb_nocreate_{n}", secrets.token_hex(8), f"anydb_nocreate_{n}"
    with admin(pg_cluster) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(role)))
    dsn = f"postgresql://{role}:{password}@{pg_cluster.host}:{pg_cluster.port}/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY); INSERT INTO notes VALUES (1)")
    console = console_for(tmp_path, dsn)
    assert "succeeded" in console.run("/backup")
    out = console.run("/restore 1")
    assert f"the bot's role needs CREATEDB and membership in {name}'s owner (or SUPERUSER)" in out, out
    assert request_state.get_request(console.services.store, 1) is None
    pg_cluster.drop_database(name)
    with admin(pg_cluster) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_whole_custom_restore_runs_parallel_unless_told(tmp_path, sample_dsn):
    console = console_for(tmp_path, sample_dsn)
    assert "succeeded" in console.run("/backup")
    jobs = max(1, min(4, os.cpu_count() or 1))
    out = console.run("/restore 1 --dry-run")
    assert (f"pg_restore with {jobs} parallel jobs" if jobs > 1 else "pg_restore in one transaction") in out, out
    assert "pg_restore in one transaction into a new database" in console.run("/restore 1 --jobs 1 --dry-run")
    assert "pg_restore with 3 parallel jobs" in console.run("/restore 1 --jobs 3 --dry-run")
    assert "succeeded" in console.run("/backup --format plain")
    assert "side database: psql in one transaction" in console.run("/restore 2 --dry-run")
