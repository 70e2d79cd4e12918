"""The runbook's worst day (issue #13): the database server and the bot's state are both gone.

An encrypted backup of a database whose objects belong to and are granted to its own roles is
all that is left, in storage. The catalog is rebuilt from the manifests there, and an approved
`/restore latest main --to dr` brings the database up on a new, empty server, identical in
schema, data, owners and grants, verified by the bot.
"""

from __future__ import annotations

import subprocess

import psycopg
import pytest
from psycopg import sql

from commands.backup.catalog_rebuild import rebuild_catalog
from commands.pg.cluster import TemporaryCluster
from commands.pg.tools import pg_bin, pg_env
from commands.storage import open_storage
from state import Store
from tests.builders import make_console, make_settings
from tests.test_encrypted_backups import keygen
from tests.test_restore import approve, content_of, message_id

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1"], "required_approvals": 1}
OWNER, READER = 'shop "owner"', "shop reader ✓"


def full_schema(dsn: str) -> str:
    """Schema with owners and grants, as pg_dump prints it (its random \\restrict key left out)."""
    out = subprocess.run([pg_bin("pg_dump"), "--schema-only"], capture_output=True, text=True, env=pg_env(dsn),
                         check=True).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


@pytest.fixture
def lost_server():
    """A server of its own, so the test can lose it."""
    cluster = TemporaryCluster().start()
    yield cluster
    cluster.stop()


def build_shop(cluster: TemporaryCluster) -> str:
    with cluster.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(OWNER)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 5").format(sql.Identifier(READER)))
        conn.execute(sql.SQL("CREATE DATABASE shop OWNER {}").format(sql.Identifier(OWNER)))
    dsn = cluster.dsn("shop")
    with psycopg.connect(dsn, autocommit=True) as conn:
        owner, reader = sql.Identifier(OWNER), sql.Identifier(READER)
        conn.execute(sql.SQL("CREATE SCHEMA sales AUTHORIZATION {}").format(owner))
        conn.execute("CREATE TABLE sales.orders (id serial PRIMARY KEY, item text NOT NULL, total numeric)")
        conn.execute("INSERT INTO sales.orders (item, total) SELECT 'item ' || g, g * 1.5 FROM generate_series(1, 300) g")
        conn.execute(sql.SQL("ALTER TABLE sales.orders OWNER TO {}").format(owner))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA sales TO {}").format(reader))
        conn.execute(sql.SQL("GRANT SELECT ON sales.orders TO {}").format(reader))
        conn.execute(sql.SQL("GRANT UPDATE (item) ON sales.orders TO {}").format(reader))
    return dsn


def drop_shop(dr) -> None:
    with dr.admin() as conn:
        conn.execute("DROP DATABASE IF EXISTS shop WITH (FORCE)")
        for role in (READER, OWNER):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_server_and_state_lost_restore_encrypted_backup_onto_a_new_server(tmp_path, lost_server, dr_cluster):
    public = keygen(tmp_path / "key.txt")
    dsn = build_shop(lost_server)
    storage = {"url": f"file://{tmp_path / 'backups'}", "encrypt_to": [public],
               "identity_file": str(tmp_path / "key.txt")}
    env = {"DR_URL": dr_cluster.dsn("postgres")}
    settings = make_settings(tmp_path, dsn, access=ACCESS, storage=storage, env=env,
                             targets={"dr": {"url_env": "DR_URL"}})
    console = make_console(settings)
    assert "Backup #1 of main succeeded" in console.run("/backup")
    schema, data = full_schema(dsn), content_of(dsn)

    # the disaster: the server and the bot's state database are gone
    lost_server.stop()
    console.services.close()
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)

    report = rebuild_catalog(open_storage(settings.storage_url), Store(settings.state_path), keyring=settings.signing)
    assert report.ok, report.text()
    console = make_console(settings)
    try:
        out = console.run("/restore latest main --to dr")
        assert "Server: target dr" in out and "will be created" in out, out
        assert f"Creates role(s) first: {OWNER}, {READER}" in out
        out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
        assert "Restore request #1 restored backup #1" in out and "row counts: ok" in out, out
        restored = dr_cluster.dsn("shop")
        assert full_schema(restored) == schema  # owners and grants included
        assert content_of(restored) == data
    finally:
        drop_shop(dr_cluster)


def test_missing_roles_can_be_left_out_with_no_owner(tmp_path, lost_server, dr_cluster):
    dsn = build_shop(lost_server)
    settings = make_settings(tmp_path, dsn, access=ACCESS, env={"DR_URL": dr_cluster.dsn("postgres")},
                             targets={"dr": {"url_env": "DR_URL"}})
    console = make_console(settings)
    assert "succeeded" in console.run("/backup")
    try:
        out = console.run("/restore latest --to dr --no-owner")
        assert "Creates role(s)" not in out and "owners and privileges are not restored" in out, out
        out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
        assert "Restore request #1 restored backup #1" in out, out
        with dr_cluster.admin() as conn:
            assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", [OWNER]).fetchone()[0] == 0
        with psycopg.connect(dr_cluster.dsn("shop")) as conn:
            assert conn.execute("SELECT count(*) FROM sales.orders").fetchone()[0] == 300
    finally:
        drop_shop(dr_cluster)
