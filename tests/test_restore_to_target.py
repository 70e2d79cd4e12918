"""Restores onto another server: a [targets.NAME] DR standby, with the same plan, approvals and checks."""

from __future__ import annotations

import psycopg

from tests.builders import make_console, make_settings
from tests.test_restore import approve, content_of, message_id

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1"], "required_approvals": 1}


def test_restore_latest_onto_a_dr_server_brings_the_database_up_there(tmp_path, sample_dsn, dr_cluster):
    env = {"DR_URL": dr_cluster.dsn("postgres")}
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS, env=env,
                                         targets={"dr": {"url_env": "DR_URL"}}))
    assert "Backup #1 of main succeeded" in console.run("/backup")
    source = content_of(sample_dsn)
    dbname = sample_dsn.rsplit("/", 1)[1]
    on_production = bot_databases(sample_dsn)
    out = console.run("/restore latest main --to dr")
    assert f"Server: target dr (PostgreSQL {dr_cluster_version(dr_cluster)})" in out, out
    assert f"{dr_cluster.port}/{dbname}" in out and "will be created" in out
    assert "Waiting for 1 approval" in out  # a copy of production data on another server is approved too
    out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "Restore request #1 restored backup #1" in out and "row counts: ok" in out, out
    assert content_of(dr_cluster.dsn(dbname)) == source
    assert bot_databases(sample_dsn) == on_production  # the production server got no side or copy database
    dr_cluster.drop_database(dbname)


def bot_databases(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'backupbot_%'")}


def dr_cluster_version(cluster) -> str:
    with psycopg.connect(cluster.dsn("postgres")) as conn:
        return conn.execute("SHOW server_version").fetchone()[0].split()[0]


def test_a_target_that_is_the_production_server_is_called_out(tmp_path, sample_dsn, pg_cluster):
    env = {"SAME_URL": pg_cluster.dsn("postgres")}
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS, env=env,
                                         targets={"staging": {"url_env": "SAME_URL"}}))
    assert "succeeded" in console.run("/backup")
    out = console.run("/restore latest --to staging --into staging_copy --dry-run")
    assert "is the same server as a backed-up (production) database" in out, out


def test_unknown_or_unset_targets_get_a_clear_message(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS, targets={"dr": {"url_env": "NOT_SET_URL"}}))
    assert "succeeded" in console.run("/backup")
    assert "unknown restore target 'nowhere'" in console.run("/restore latest --to nowhere")
    assert "NOT_SET_URL is not set" in console.run("/restore latest --to dr")
