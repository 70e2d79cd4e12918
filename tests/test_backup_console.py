"""/backup as a user at the terminal sees it: the console drives the same commands as Slack."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import psycopg
import zstandard

from bot.console import os_account
from commands.pg.tools import pg_bin, pg_env
from state.backups import list_backups
from state.jobs import recent_jobs
from tests.builders import make_console, make_settings


def stored_files(tmp_path):
    root = tmp_path / "backups"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_backup_reports_a_complete_checksummed_artifact(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn))
    out = console.run("/backup main")
    assert "Backup #1 of main started by @U0OPS" in out
    assert "Backup #1 of main succeeded" in out
    assert "Format: custom (zstd compression)" in out
    assert "Tables: " in out and "Rows: " in out
    [record] = list_backups(console.services.store)
    artifact = tmp_path / "backups" / record.key
    data = artifact.read_bytes()
    import hashlib

    assert hashlib.sha256(data).hexdigest() == record.sha256
    assert f"sha256: {record.sha256[:12]}" in out
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert raw.startswith(b"PGDMP")
    manifest = json.loads((tmp_path / "backups" / record.manifest_key).read_text())
    assert manifest["backup_id"] == 1 and manifest["sha256"] == record.sha256
    assert manifest["row_counts"] == record.row_counts
    with psycopg.connect(sample_dsn) as conn:
        users = conn.execute("SELECT count(*) FROM public.users").fetchone()[0]
    assert manifest["row_counts"]["public.users"] == users
    assert "reporting" in {t.split(".")[0] for t in manifest["row_counts"]}


def test_gzip_backup_is_what_gunzip_and_psql_read(tmp_path, sample_dsn, pg_cluster):
    console = make_console(make_settings(tmp_path, sample_dsn))
    out = console.run("/backup --format gzip --note before the migration")
    assert "succeeded" in out and "Note: before the migration" in out
    [record] = list_backups(console.services.store)
    sql = gzip.decompress((tmp_path / "backups" / record.key).read_bytes())
    assert b"-- PostgreSQL database dump complete" in sql
    target = pg_cluster.create_database("gzip_target")
    # the runbook's `gunzip -c file | psql`
    subprocess.run([pg_bin("psql"), "-v", "ON_ERROR_STOP=1", "-q"], input=sql, check=True, capture_output=True,
                   env=pg_env(target))
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM public.users").fetchone()[0] == record.row_counts["public.users"]


def test_table_and_schema_only_backups(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn))
    out = console.run("/backup main --format plain --tables users,products")
    assert "succeeded" in out
    out = console.run("/backup --schema-only --format plain")
    assert "succeeded" in out
    table_backup, schema_backup = sorted(list_backups(console.services.store), key=lambda r: r.id)
    assert table_backup.tables == ("public.users", "public.products")
    assert set(table_backup.row_counts) == {"public.users", "public.products"}
    sql = (tmp_path / "backups" / table_backup.key).read_text()
    assert "CREATE TABLE public.users" in sql and "CREATE TABLE public.campaigns" not in sql
    schema_sql = (tmp_path / "backups" / schema_backup.key).read_text()
    assert "CREATE TABLE public.campaigns" in schema_sql and "COPY public.users" not in schema_sql
    listing = console.run("/backup list")
    assert "#1" in listing and "#2" in listing and "tables public.users,public.products" in listing


def test_bad_input_gets_usage_and_runs_nothing(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn))
    for line, expected in [
        ("/backup --format zip", "unknown format 'zip'"),
        ("/backup nosuchdb", "unknown database 'nosuchdb'"),
        ("/backup --tables 'users;drop table users'", "is not a table name"),
        ("/backup --tables=--file=/etc/passwd", "is not a table name"),
        ("/backup --bogus", "unknown option '--bogus'"),
        ("/backup main extra", "too many words"),
        ('/backup --note "unterminated', "cannot read the command"),
        ("/backup list --limit lots", "needs a whole number"),
    ]:
        out = console.run(line)
        assert expected in out, (line, out)
        assert "(only you)" in out
    assert "Usage:" in console.run("/backup help")
    assert recent_jobs(console.services.store) == []
    assert stored_files(tmp_path) == []


def test_unknown_table_is_answered_privately_before_any_job_starts(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn))
    out = console.run("/backup --tables users,nosuchtable")
    assert out == "(only you) no table 'nosuchtable' in database main"
    assert list_backups(console.services.store) == []
    assert stored_files(tmp_path) == []
    assert recent_jobs(console.services.store) == []
    assert "Backup #1 of main succeeded" in console.run("/backup --tables users")


def test_an_empty_backup_list_says_what_to_type(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn))
    assert ("No backups of all databases yet. Type `/backup DB` to take one now (`/backup` alone backs up the default "
            "database); `/backup help` shows every option.") in console.run("/backup list")
    assert "No backups of main yet. Type `/backup main` to take one now;" in console.run("/backup list main")


def test_non_operator_is_told_and_nothing_runs(tmp_path, sample_dsn, reliability):
    settings = make_settings(tmp_path, sample_dsn, access={"operators": ["U0OPS"], "approvers": ["U0APP"]})
    console = make_console(settings, user="U0STRANGER")
    out = console.run("/backup main")
    assert "@U0STRANGER is not an operator" in out
    assert recent_jobs(console.services.store) == []
    assert "No backups" in console.run("/backup list")
    reliability("authority", "/backup by a non-operator", 1, "told they are not an operator; nothing runs")


def test_unreachable_database_fails_with_a_redacted_reason(tmp_path, pg_cluster):
    dsn = f"postgresql://postgres:{pg_cluster.password}@127.0.0.1:{pg_cluster.port}/no_such_database"
    console = make_console(make_settings(tmp_path, dsn))
    out = console.run("/backup")
    assert "Backup #1 failed: cannot connect" in out
    assert pg_cluster.password not in out
    assert list_backups(console.services.store) == []


def test_backup_from_a_script_through_stdin(tmp_path, sample_dsn):
    config = tmp_path / "backupbot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n[storage]\nurl = "file://{tmp_path / "backups"}"\n'
                      f'[access]\noperators = ["U0OPS"]\nconsole_operators = ["{os_account()}"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "console", "--config", str(config)],
        input="/backup --format gzip\n/backup list\n", capture_output=True, text=True, timeout=120,
        env={"DATABASE_URL": sample_dsn, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "Backup #1 of main succeeded" in result.stdout
    assert "#1 · main" in result.stdout
    assert sample_dsn.split("@")[0].split(":")[-1] not in result.stdout + result.stderr


def test_backup_to_s3_is_one_multipart_upload(tmp_path, sample_dsn, s3_storage_url):
    from commands.storage import open_storage

    console = make_console(make_settings(tmp_path, sample_dsn, storage_url=s3_storage_url))
    out = console.run("/backup main --format plain")
    assert "Backup #1 of main succeeded" in out and "Location: s3://" in out
    [record] = list_backups(console.services.store)
    storage = open_storage(s3_storage_url)
    data = storage.get_bytes(record.key)
    import hashlib

    assert hashlib.sha256(data).hexdigest() == record.sha256
    assert b"-- PostgreSQL database dump complete\n" in data[-300:]
    assert json.loads(storage.get_bytes(record.manifest_key))["sha256"] == record.sha256
    backup_keys = [k for k in storage.list_keys() if not k.startswith("_state/")]  # a copy of the state db goes too
    assert backup_keys == sorted([record.key, record.manifest_key, record.globals_file["key"]])


def test_s3_failure_fails_the_backup_and_stores_nothing(tmp_path, sample_dsn, s3_server, s3_server_running):
    console = make_console(make_settings(tmp_path, sample_dsn, storage_url="s3://no-such-bucket-here/x"))
    out = console.run("/backup")
    assert "Backup #1 failed" in out and "bucket does not exist" in out
    assert list_backups(console.services.store) == []
