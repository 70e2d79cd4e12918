"""The README's restore promises under hostile names, partial failures and parallel jobs (issue #10).

Every name below is legal in PostgreSQL and made by any role that may CREATE: the bot must
carry each one, byte for byte, from the catalog to the SQL a restore runs, and run none of it.
"""

from __future__ import annotations

import os
import re
import secrets
import stat

import psycopg
import pytest
from psycopg import sql

from commands.pg.tools import pg_bin, pg_bin_for
from state import approvals as request_state
from state.backups import list_backups
from tests.builders import make_console, make_settings
from tests.test_restore import approve, message_id

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1", "U0APP2"], "required_approvals": 1}


def hostile_names(sentinel) -> dict[str, str]:
    """`sentinel` is a short path: PostgreSQL cuts names at 63 bytes."""
    return {
        "copy": f"x\";COPY/**/(SELECT/**/1)/**/TO/**/'{sentinel}_copy';--",
        "space": "my schema",
        "unicode": "Ünïcødé ✓ 表",
        "dash": "-dash --option",
        "newline": "line\nbreak",
        "shell": f"\\! touch {sentinel}_shell",
        "semi": "semi;colon -- /* c */",
        "long": "é" * 31 + "x",  # 63 bytes
        "quote": 'it"s',
    }


def build_hostile_database(dsn: str, names: dict[str, str]) -> None:
    ident = sql.Identifier
    with psycopg.connect(dsn, autocommit=True) as conn:
        for key in ("copy", "space", "unicode", "dash"):
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident(names[key])))
        tables = [(names["copy"], names["newline"]), (names["space"], names["shell"]), (names["unicode"], names["semi"]),
                  (names["dash"], names["long"]), ("public", names["quote"])]
        for schema, table in tables:
            conn.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, {} text, n int)").format(
                ident(schema, table), ident(names["semi"])))
            conn.execute(sql.SQL("INSERT INTO {} ({}, n) SELECT 'row ' || g || E' \\\\ '';', g FROM generate_series(1, 40) g")
                         .format(ident(schema, table), ident(names["semi"])))
            conn.execute(sql.SQL("CREATE INDEX {} ON {} (n)").format(ident(f'idx"{table[:20]}'), ident(schema, table)))
            conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(ident(schema, table), sql.Literal(names["shell"])))
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY (id) REFERENCES {} (id)").format(
            ident(names["space"], names["shell"]), ident(names["copy"][:60]), ident(names["copy"], names["newline"])))
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (n > 0) NOT VALID").format(
            ident(names["unicode"], names["semi"]), ident("chk;" + names["newline"])))


def content_of(dsn: str) -> dict:
    """Every user table's rows (md5), sequences, indexes, constraints and comments, by exact name."""
    out = {}
    with psycopg.connect(dsn) as conn:
        conn.execute("SET search_path TO pg_catalog")  # names print schema-qualified, whatever the database's default
        tables = conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
                              "('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
        for schema, table in tables:
            out[("rows", schema, table)] = conn.execute(sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t").format(
                sql.Identifier(schema, table))).fetchone()
        for schema, seq in conn.execute("SELECT schemaname, sequencename FROM pg_sequences ORDER BY 1, 2").fetchall():
            out[("seq", schema, seq)] = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
                sql.Identifier(schema, seq))).fetchone()
        out["indexes"] = conn.execute("SELECT schemaname, tablename, indexname FROM pg_indexes WHERE schemaname "
                                      "NOT IN ('pg_catalog') ORDER BY 1, 2, 3").fetchall()
        out["constraints"] = conn.execute("SELECT conrelid::regclass::text, conname, convalidated FROM pg_constraint "
                                          "WHERE connamespace <> 'pg_catalog'::regnamespace ORDER BY 1, 2").fetchall()
        out["comments"] = conn.execute("SELECT objoid::regclass::text, description FROM pg_description "
                                       "WHERE classoid = 'pg_class'::regclass ORDER BY 1").fetchall()
        out["schemas"] = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                                      "AND nspname <> 'information_schema' ORDER BY 1").fetchall()
    return out


def assert_nothing_ran(names: dict[str, str]) -> None:
    sentinel = names["sentinel"]
    assert not os.path.exists(f"{sentinel}_copy"), "a schema name ran as SQL"
    assert not os.path.exists(f"{sentinel}_shell"), "a table name ran as a psql command"


@pytest.fixture
def hostile(pg_dsn):
    sentinel = f"/tmp/bb{secrets.token_hex(3)}"
    names = hostile_names(sentinel)
    build_hostile_database(pg_dsn, names)
    yield {**names, "sentinel": sentinel}
    for suffix in ("_copy", "_shell"):
        if os.path.exists(sentinel + suffix):
            os.unlink(sentinel + suffix)


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_hostile_names_round_trip_through_backup_restore_and_drill_and_run_nothing(tmp_path, pg_dsn, hostile, fmt, reliability):
    console = make_console(make_settings(tmp_path, pg_dsn, access=ACCESS))
    before = content_of(pg_dsn)
    assert "succeeded" in console.run(f"/backup --format {fmt}")
    drill = console.run("/backup verify latest")
    assert "passed" in drill, drill
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # damage it, then put it back
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(hostile["space"], hostile["shell"])))
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(hostile["unicode"])))
    out = console.run("/restore latest")
    out += approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "Restore request #1 restored backup #1" in out, out
    assert content_of(pg_dsn) == before
    assert_nothing_ran(hostile)

    reliability("injection", f"hostile schema, table, index and constraint names ({fmt}): quotes, ;, --, /*, \\!, "
                "newlines, Unicode, 63 bytes, leading -", 1, "backup, drill and restore round-trip exactly; no name runs", 0)


def test_hostile_tables_restore_exactly_with_tables_and_nothing_else_changes(tmp_path, pg_dsn, hostile):
    console = make_console(make_settings(tmp_path, pg_dsn, access=ACCESS))
    before = content_of(pg_dsn)
    assert "succeeded" in console.run("/backup")
    shell_table = sql.Identifier(hostile["space"], hostile["shell"])
    quote_table = sql.Identifier("public", hostile["quote"])
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DELETE FROM {}").format(shell_table))
        conn.execute(sql.SQL("DELETE FROM {} WHERE n > 20").format(quote_table))
    typed = '"my schema"."' + hostile["shell"].replace('"', '""') + '"'
    out = console.run(f"/restore latest --tables '{typed}'")
    out += approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "Restore request #1 restored backup #1" in out, out
    after = content_of(pg_dsn)
    assert after[("rows", hostile["space"], hostile["shell"])] == before[("rows", hostile["space"], hostile["shell"])]
    assert after[("rows", "public", hostile["quote"])][0] == 20  # not in --tables: left alone
    assert after["indexes"] == before["indexes"] and after["constraints"] == before["constraints"]
    assert after["comments"] == before["comments"]
    assert_nothing_ran(hostile)


def test_unclosed_or_odd_table_names_get_a_clear_message(tmp_path, pg_dsn, hostile):
    console = make_console(make_settings(tmp_path, pg_dsn, access=ACCESS))
    assert "quoted table name is not closed" in console.run("""/backup --tables '"my schema.x'""")
    assert "is not a table name" in console.run("/backup --tables 'a;b'")
    assert "no table" in console.run("""/backup --tables '"My Schema".x'""")
    typed = '"' + hostile["long"] + '"'
    assert "no table" in console.run(f"/backup --tables 'public.{typed}'")  # it is in schema "-dash --option"
    out = console.run(f"""/backup --tables '"-dash --option".{typed}'""")
    assert "succeeded" in out, out
    assert list_backups(console.services.store)[0].row_counts == {
        '"-dash --option"."' + hostile["long"] + '"': 40}


def pg_restore_that_dies(tmp_path, after_bytes: int) -> str:
    """A pg_restore that writes `after_bytes` of its SQL, then is killed (SIGKILL) mid-stream."""
    shim = tmp_path / "bin" / "pg_restore"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f"""#!/bin/bash
for a in "$@"; do
  if [ "$a" = "--file=-" ] || [[ "$a" == --jobs=* ]]; then
    if [[ "$a" == --jobs=* ]]; then {pg_bin('pg_restore')} "$@" & sleep 0.3; kill -9 $! ; kill -9 $$; fi
    {pg_bin('pg_restore')} "$@" | head -c {after_bytes}
    kill -9 $$
  fi
done
exec {pg_bin('pg_restore')} "$@"
""")
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return str(shim)


def use_shim(monkeypatch, shim: str) -> None:
    """Whichever way the runner picks its pg_restore (by name, or the newest fitting the server)."""
    real, real_for = pg_bin, pg_bin_for
    monkeypatch.setattr("commands.pg.restore.runner.pg_bin", lambda name: shim if name == "pg_restore" else real(name))
    monkeypatch.setattr("commands.pg.restore.runner.pg_bin_for",
                        lambda name, major: shim if name == "pg_restore" else real_for(name, major))


def test_pg_restore_killed_mid_stream_leaves_the_target_exactly_as_it_was(tmp_path, sample_dsn, monkeypatch, reliability):
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS))
    assert "succeeded" in console.run("/backup")
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE id > 10")
        conn.execute("CREATE SCHEMA after_backup")
        conn.execute("CREATE TABLE after_backup.notes (t text)")
    before = content_of(sample_dsn)
    shim = pg_restore_that_dies(tmp_path, after_bytes=200_000)
    use_shim(monkeypatch, shim)
    out = console.run("/restore latest")
    out += approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "Restore request #1 failed" in out and "pg_restore exited with status -9" in out, out
    # a whole restore goes into a side database (commands.restore.rules): that is what is thrown away
    assert "The side database backupbot_side_1_" in out and "is dropped" in out and "was not touched" in out
    assert content_of(sample_dsn) == before
    with psycopg.connect(sample_dsn) as conn:
        assert not conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'backupbot\\_side\\_1\\_%'"
                                ).fetchall()
    assert "Rollback to the safety snapshot" not in out  # nothing was changed, nothing to undo

    reliability("faults", "pg_restore killed (SIGKILL) mid-stream during a restore", 1,
                "into the side database: dropped, target exactly as before", 0)


def test_parallel_restore_replaces_the_database_only_after_it_verified(tmp_path, sample_dsn, pg_cluster):
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS))
    assert "succeeded" in console.run("/backup")
    source = content_of(sample_dsn)
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE id > 10")
        conn.execute("CREATE TABLE public.after_backup (t text)")
    dbname = sample_dsn.rsplit("/", 1)[1]
    with pg_admin(pg_cluster) as conn:  # database-level settings pg_restore never restores
        conn.execute(sql.SQL('ALTER DATABASE {} SET search_path = reporting, "My ""Odd"" Schema", public')
                     .format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 42").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS 'the shop'").format(sql.Identifier(dbname)))
    settings_before = database_settings(pg_cluster, dbname)
    out = console.run("/restore latest --jobs 2")
    assert "side database" in out  # the plan says how it will run
    out += approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "Restore request #1 restored backup #1" in out, out
    assert content_of(sample_dsn) == source
    assert database_settings(pg_cluster, dbname) == settings_before
    kept = re.search(r"is kept as (backupbot_prev_1_[0-9a-f]+)", out)
    assert kept, out
    with psycopg.connect(sample_dsn) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'backupbot_%'")]
    assert kept.group(1) in names  # other tests' requests #1 keep theirs on this cluster too
    assert not [n for n in names if n.startswith("backupbot_side_")]
    pg_cluster.drop_database(kept.group(1))


def pg_admin(cluster):
    return psycopg.connect(cluster.dsn("postgres"), autocommit=True)


def database_settings(cluster, dbname: str) -> tuple:
    with pg_admin(cluster) as conn:
        return conn.execute(
            "SELECT d.datconnlimit, shobj_description(d.oid, 'pg_database'), d.datacl::text, "
            "(SELECT array_agg(c ORDER BY c) FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = d.oid) "
            "FROM pg_database d WHERE d.datname = %s", [dbname]).fetchone()


def test_jobs_and_tables_do_not_mix_and_odd_numbers_are_refused_plainly(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS))
    assert "succeeded" in console.run("/backup")
    assert "drop one of the two" in console.run("/restore latest --tables users --jobs 4")
    for line in ("/restore 99999999999999999999", "/restore ²", "/backup verify 99999999999999999999",
                 "/restore cancel 99999999999999999999"):
        out = console.run(line)
        assert "(only you)" in out and "Something went wrong" not in out, (line, out)


def test_parallel_restore_that_fails_leaves_the_target_as_it_was(tmp_path, sample_dsn, monkeypatch, reliability):
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS))
    assert "succeeded" in console.run("/backup")
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE id > 10")
    before = content_of(sample_dsn)
    shim = pg_restore_that_dies(tmp_path, after_bytes=0)
    use_shim(monkeypatch, shim)
    out = console.run("/restore latest --jobs 2")
    out += approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "Restore request #1 failed" in out, out
    assert content_of(sample_dsn) == before
    with psycopg.connect(sample_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'backupbot_side_%'").fetchone()[0] == 0

    reliability("faults", "pg_restore --jobs 2 killed during a parallel restore", 1,
                "side database dropped; the target was never touched", 0)


def test_whole_restore_of_a_tables_backup_never_drops_other_objects(tmp_path, sample_dsn, reliability):
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS))
    assert "succeeded" in console.run("/backup --tables users")
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("CREATE VIEW active_users AS SELECT * FROM users")
    before = content_of(sample_dsn)
    out = console.run("/restore latest --dry-run")
    assert "no full backup" in out  # latest means a full backup
    out = console.run("/restore 1")
    out += approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "Restore request #1 failed" in out and "depend" in out, out
    assert content_of(sample_dsn) == before
    with psycopg.connect(sample_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM active_users").fetchone()[0] > 0

    reliability("faults", "whole restore of a --tables backup over a view that depends on the table", 1,
                "refused by PostgreSQL (no CASCADE), rolled back; the view stays", 0)


def test_restore_into_a_new_database_needs_approval_by_default(tmp_path, sample_dsn, pg_cluster):
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS))
    assert "succeeded" in console.run("/backup")
    out = console.run("/restore latest --into copy_needs_ok")
    assert "Waiting for 1 approval" in out and "No approval needed" not in out
    with psycopg.connect(sample_dsn) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'copy_needs_ok'").fetchone() is None
    out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "Restore request #1 restored backup #1" in out
    pg_cluster.drop_database("copy_needs_ok")


def test_snapshots_and_partial_backups_are_never_latest_nor_keep_the_full_one_alive(tmp_path, sample_dsn, pg_cluster,
                                                                                     reliability):
    console = make_console(make_settings(tmp_path, sample_dsn, access={**ACCESS, "approve_new_database_restores": False},
                                         retention={"keep_last": 7, "keep_daily": 0, "keep_weekly": 0}))
    assert "Backup #1 of main succeeded" in console.run("/backup")
    out = console.run("/restore 1 --into copy_of_main")
    assert "restored backup #1" in out
    out = console.run("/restore 1 --into copy_of_main")  # exists now: a safety snapshot of the copy comes first
    out += approve(console, message_id(out, "Restore request #2"), "U0APP1")
    assert "restored backup #1" in out, out
    snapshot = [r for r in list_backups(console.services.store) if r.kind == "pre-restore"][0]
    assert snapshot.dbname == "copy_of_main"
    for _ in range(7):
        assert "succeeded" in console.run("/backup --schema-only")
    schema_only = list_backups(console.services.store)[0]
    assert "passed" in console.run(f"/backup verify {schema_only.id}")
    plan = console.run("/restore latest --dry-run")
    assert "restore backup #1 of main" in plan and "manual backup of main" in plan, plan
    prune = console.run("/backup prune --dry-run")
    assert "#1" in prune.split("Keep")[-1] or "keep" in prune.lower()
    console.run("/backup prune")
    remaining = {r.id for r in list_backups(console.services.store)}
    assert 1 in remaining, console.run("/backup list --limit 20")
    pg_cluster.drop_database("copy_of_main")

    reliability("authority", "seven --schema-only backups, a drill of one, a snapshot of a --into copy, then prune", 1,
                "latest and retention count full backups only: the only full backup is kept", 0)


def test_a_restart_removes_what_an_interrupted_parallel_restore_left(tmp_path, sample_dsn, pg_cluster):
    """The bot died while pg_restore --jobs filled the side database: the next start drops it."""
    settings = make_settings(tmp_path, sample_dsn, access=ACCESS)
    console = make_console(settings)
    assert "succeeded" in console.run("/backup")
    assert "Restore request #1" in console.run("/restore latest --jobs 2")
    store = console.services.store
    assert request_state.transition(store, 1, request_state.PENDING, request_state.RUNNING)
    pg_cluster.create_database("backupbot_side_1_dead01")  # what the dead bot had begun to fill
    console.services.close()  # the bot is gone; its lock with it

    restarted = make_console(settings)
    assert request_state.get_request(restarted.services.store, 1).status == "interrupted"
    with psycopg.connect(sample_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'backupbot_side_1_dead01'"
                            ).fetchone()[0] == 0
    assert content_of(sample_dsn)  # the target itself was never touched


def test_a_target_with_large_objects_is_restored_whole(tmp_path, sample_dsn):
    """Large objects live outside every schema: a whole restore replaces them through the side database,
    the way every whole restore over a database now goes (it was refused at plan time before)."""
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS))
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("SELECT lo_from_bytea(0, 'a scanned invoice')")
    assert "succeeded" in console.run("/backup")
    with psycopg.connect(sample_dsn, autocommit=True) as conn:  # one more after the backup, which must go
        conn.execute("SELECT lo_from_bytea(0, 'written after the backup')")
    out = console.run("/restore latest")
    assert "How: side database" in out and "large objects" in out, out
    out += approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "Restore request #1 restored backup #1" in out, out
    with psycopg.connect(sample_dsn) as conn:
        assert conn.execute("SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata").fetchall() == [
            ("a scanned invoice",)]
