"""Row counts come from pg_dump's own stream (issue #20): they equal count(*) of every table, under
hostile names and on databases nobody here wrote, and the server reads each row once per backup."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from commands.errors import DumpError
from commands.pg import snapshot
from commands.pg.archive_stream import CustomArchiveCounter
from commands.pg.copy_stream import PlainCopyCounter
from commands.pg.tools import pg_bin, pg_env
from state.backups import latest_backup
from tests.builders import make_console, make_settings
from tests.test_restore_safety import hostile  # noqa: F401 (fixture)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
FORMATS = ["custom", "plain", "gzip"]


def add_awkward_rows(dsn: str) -> None:
    """Rows whose chunk length prefix holds a newline byte (10 and 2,560-2,815 bytes), empty rows, a table
    with no column, escapes, a generated column, a large object, and text that looks like a COPY."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE len10 (s text); INSERT INTO len10 SELECT 'abcdefghi' FROM generate_series(1, 300)")
        conn.execute("CREATE TABLE wide (s text); INSERT INTO wide SELECT repeat('x', 2560 + g % 256) "
                     "FROM generate_series(1, 100) g")
        conn.execute("CREATE TABLE empties (s text); INSERT INTO empties SELECT '' FROM generate_series(1, 70)")
        conn.execute("CREATE TABLE nocols (); INSERT INTO nocols DEFAULT VALUES; INSERT INTO nocols DEFAULT VALUES")
        conn.execute("CREATE TABLE esc (s text, b bytea, g int GENERATED ALWAYS AS (length(s)) STORED)")
        conn.execute("INSERT INTO esc (s, b) SELECT E'a\\\\.\\nb\\\\', '\\x000a0d'::bytea FROM generate_series(1, 30)")
        conn.execute("INSERT INTO esc (s) VALUES (E'\\\\.'), ('.'), (E'\\\\')")
        conn.execute("CREATE TABLE \"user\" (\"select\" int)")  # keywords pg_dump must quote
        conn.execute("INSERT INTO \"user\" VALUES (1), (2)")
        fake = "\nCOPY public.len10 (s) FROM stdin;\n1\n2\n\\.\n"
        conn.execute(sql.SQL("COMMENT ON TABLE empties IS {}").format(sql.Literal(fake)))
        conn.execute(sql.SQL("CREATE VIEW looks_like_copy AS SELECT {}::text AS x").format(sql.Literal(fake)))
        conn.execute(sql.SQL("CREATE FUNCTION also_looks() RETURNS text LANGUAGE sql AS {}").format(
            sql.Literal(f"SELECT $q${fake}$q$")))
        conn.execute("SELECT lo_from_bytea(0, decode(repeat('0a00', 5000), 'hex'))")


def load_chinook(dsn: str, tmp_path: Path) -> None:
    """Chinook creates and connects to its own database: load only what follows `\\c chinook;`."""
    text = (FIXTURES / "chinook.sql").read_text(encoding="utf-8")
    body = tmp_path / "chinook-body.sql"
    body.write_text(text.split("\\c chinook;", 1)[1], encoding="utf-8")
    _psql(dsn, body)


def load_pagila(dsn: str, tmp_path: Path) -> None:
    _psql(dsn, FIXTURES / "pagila-schema.sql")
    with psycopg.connect(dsn, autocommit=True) as conn:  # schema only: give a few of its tables rows
        conn.execute("INSERT INTO actor (first_name, last_name) SELECT 'A' || g, 'B' || g FROM generate_series(1, 50) g")
        conn.execute("INSERT INTO category (name) VALUES ('Drama'), ('Comedy'), ('Ünïcødé')")


def _psql(dsn: str, path: Path) -> None:
    subprocess.run([pg_bin("psql"), "-q", "-X", "-v", "ON_ERROR_STOP=1", "-f", str(path)], env=pg_env(dsn),
                   check=True, capture_output=True)


def count_star(dsn: str) -> dict[str, int]:
    """count(*) of every table that holds rows, keyed as the manifest keys them."""
    with psycopg.connect(dsn) as conn:
        tables = [t for t in snapshot.read_catalog(conn).tables if t.kind == "r"]
        return {t.name.key: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t.name.identifier())).fetchone()[0]
                for t in tables}


def manifest_counts(tmp_path: Path, console) -> dict[str, int]:
    record = latest_backup(console.services.store, "main")
    return json.loads((tmp_path / "backups" / record.manifest_key).read_text())["row_counts"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_manifest_counts_equal_count_star_of_every_table_under_hostile_names(tmp_path, pg_dsn, hostile, fmt):  # noqa: F811
    add_awkward_rows(pg_dsn)
    console = make_console(make_settings(tmp_path, pg_dsn))
    out = console.run(f"/backup --format {fmt}")
    assert "succeeded" in out, out
    truth = count_star(pg_dsn)
    assert len(truth) == 11 and truth["public.user"] == 2 and truth["public.len10"] == 300
    assert manifest_counts(tmp_path, console) == truth
    assert f"Rows: {sum(truth.values()):,}" in out
    assert "passed" in console.run("/backup verify latest")  # the restore checks the same numbers


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("load", [load_chinook, load_pagila], ids=["chinook", "pagila"])
def test_manifest_counts_equal_count_star_on_fixture_databases(tmp_path, pg_dsn, fmt, load):
    load(pg_dsn, tmp_path)
    console = make_console(make_settings(tmp_path, pg_dsn))
    out = console.run(f"/backup --format {fmt}")
    assert "succeeded" in out, out
    truth = count_star(pg_dsn)
    assert manifest_counts(tmp_path, console) == truth
    assert sum(truth.values()) > 50


def test_a_backup_of_some_tables_counts_those_and_a_schema_only_backup_counts_none(tmp_path, pg_dsn):
    add_awkward_rows(pg_dsn)
    console = make_console(make_settings(tmp_path, pg_dsn))
    assert "succeeded" in console.run('/backup --tables wide,"user" --format plain')
    assert manifest_counts(tmp_path, console) == {"public.wide": 100, "public.user": 2}
    assert "succeeded" in console.run("/backup --schema-only")
    assert manifest_counts(tmp_path, console) == {}


def rows_read(dsn: str) -> int:
    """Rows the server has read from user tables, by sequential and index scans, once its statistics
    have settled (backends flush theirs as they exit)."""
    query = ("SELECT (SELECT coalesce(sum(seq_tup_read), 0) FROM pg_stat_user_tables)"
             " + (SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes)")
    last, stable_since = None, time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            value = int(conn.execute(query).fetchone()[0])
            if value != last:
                last, stable_since = value, time.monotonic()
            elif time.monotonic() - stable_since > 1.5:
                return value
            time.sleep(0.1)


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_the_server_reads_each_row_once_during_a_backup(tmp_path, pg_dsn, fmt):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for i in range(4):
            conn.execute(f"CREATE TABLE t{i} (id int PRIMARY KEY, body text)")
            conn.execute(f"INSERT INTO t{i} SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    console = make_console(make_settings(tmp_path, pg_dsn))
    before = rows_read(pg_dsn)
    subprocess.run([pg_bin("pg_dump"), "-Fc", "-Z0", "-f", str(tmp_path / "bare.dump")], env=pg_env(pg_dsn), check=True)
    bare = rows_read(pg_dsn) - before
    assert bare >= 80000
    before = rows_read(pg_dsn)
    assert "succeeded" in console.run(f"/backup --format {fmt}")
    bot = rows_read(pg_dsn) - before
    assert bot <= 1.05 * bare + 100, f"the bot's backup read {bot} rows, pg_dump alone {bare}"


def real_archive(dsn: str, tmp_path: Path, plain: bool = False) -> bytes:
    argv = [pg_bin("pg_dump"), "--format=plain" if plain else "--format=custom"] + ([] if plain else ["--compress=0"])
    return subprocess.run(argv, env=pg_env(dsn), check=True, capture_output=True).stdout


def by_oid(dsn: str) -> tuple[dict[int, int], dict, frozenset[str]]:
    with psycopg.connect(dsn) as conn:
        tables = [t for t in snapshot.read_catalog(conn).tables if t.kind == "r"]
        truth = {t.oid: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t.name.identifier())).fetchone()[0]
                 for t in tables}
        return truth, {t.oid: (t.name.schema, t.name.name, t.copy_columns) for t in tables}, snapshot.quoted_keywords(conn)


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_the_archive_parser_counts_a_real_custom_archive_split_anywhere(tmp_path, pg_dsn, hostile, size):  # noqa: F811
    add_awkward_rows(pg_dsn)
    data = real_archive(pg_dsn, tmp_path)
    truth, _, _ = by_oid(pg_dsn)
    counter = CustomArchiveCounter()
    for i in range(0, len(data), size):
        counter.feed(data[i:i + size])
    assert {oid: n for oid, n in counter.finish().items() if oid in truth} == truth


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_the_plain_counter_counts_real_sql_split_anywhere(tmp_path, pg_dsn, hostile, size):  # noqa: F811
    add_awkward_rows(pg_dsn)
    data = real_archive(pg_dsn, tmp_path, plain=True)
    truth, tables, keywords = by_oid(pg_dsn)
    counter = PlainCopyCounter(tables, keywords)
    for i in range(0, len(data), size):
        counter.feed(data[i:i + size])
    assert counter.finish() == truth


def test_an_archive_cut_short_cannot_be_counted(tmp_path, pg_dsn):
    add_awkward_rows(pg_dsn)
    data = real_archive(pg_dsn, tmp_path)
    start = data.index(b"abcdefghi\n")  # inside the rows of len10
    for cut in (20, start + 3):
        counter = CustomArchiveCounter()
        counter.feed(data[:cut])
        with pytest.raises(DumpError, match="part-way"):
            counter.finish()
    plain = real_archive(pg_dsn, tmp_path, plain=True)
    _, tables, keywords = by_oid(pg_dsn)
    counter = PlainCopyCounter(tables, keywords)
    counter.feed(plain[:re.search(rb"\nabcdefghi\n", plain).start() + 5])
    with pytest.raises(DumpError, match="inside a COPY"):
        counter.finish()
