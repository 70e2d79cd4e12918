"""Encrypted backups as an operator lives them: `[storage] encrypt_to` set, the stored bytes are age
(the `age` binary decrypts them with the key), drills and restores decrypt with `identity_file`, and
without a usable key the bot says so before anyone is asked or anything is created."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import psycopg
import pytest
import zstandard

from commands.pg.tools import pg_bin
from state import approvals as request_state
from state.backups import get_backup, list_backups
from state.jobs import recent_jobs
from tests.builders import make_console, make_settings
from tests.test_restore import approve, content_of, message_id

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1"], "required_approvals": 1}


def keygen(path: Path) -> str:
    """A key file made by the standard age-keygen (0600); returns its public key."""
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    os.chmod(path, 0o600)
    return subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def key(tmp_path) -> tuple[Path, str]:
    path = tmp_path / "key.txt"
    return path, keygen(path)


def encrypted_console(tmp_path, dsn, public: str, identity: Path | None):
    storage = {"url": f"file://{tmp_path / 'backups'}", "encrypt_to": [public]}
    if identity is not None:
        storage["identity_file"] = str(identity)
    return make_console(make_settings(tmp_path, dsn, access=ACCESS, storage=storage))


def stored(tmp_path, key: str) -> Path:
    return tmp_path / "backups" / key


def test_encrypted_backup_is_age_that_the_age_binary_decrypts(tmp_path, sample_dsn, key):
    keyfile, public = key
    console = encrypted_console(tmp_path, sample_dsn, public, keyfile)
    out = console.run("/backup main")
    assert "Backup #1 of main succeeded" in out
    assert "encrypted with age to 1 recipient(s)" in out
    [record] = list_backups(console.services.store)
    artifact = stored(tmp_path, record.key)
    assert artifact.name.endswith(".dump.zst.age")
    data = artifact.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n") and b"PGDMP" not in data
    assert hashlib.sha256(data).hexdigest() == record.sha256 and len(data) == record.size

    # the manual path from the README: age -d -i key.txt FILE | zstd -d | pg_restore
    plain = subprocess.run(["age", "-d", "-i", str(keyfile), str(artifact)], check=True, capture_output=True).stdout
    archive = zstandard.ZstdDecompressor().decompressobj().decompress(plain)
    assert archive.startswith(b"PGDMP")
    toc = subprocess.run([pg_bin("pg_restore"), "--list"], input=archive, capture_output=True, check=True).stdout
    assert b"TABLE DATA public users" in toc

    manifest = json.loads(stored(tmp_path, record.manifest_key).read_bytes())
    assert manifest["encryption"] == "age" and manifest["recipients"] == [public]
    assert manifest["restore"].startswith("age -d -i key.txt FILE | zstd -d | pg_restore")

    # the globals beside it: encrypted too, and with role passwords (the artifact is encrypted)
    globals_file = manifest["globals_file"]
    assert globals_file["key"] == record.key.removesuffix(".age") + ".globals.sql.age"
    assert globals_file["passwords"] is True
    stored_globals = stored(tmp_path, globals_file["key"]).read_bytes()
    assert hashlib.sha256(stored_globals).hexdigest() == globals_file["sha256"]
    text = subprocess.run(["age", "-d", "-i", str(keyfile)], input=stored_globals, check=True,
                          capture_output=True).stdout.decode()
    assert "CREATE ROLE postgres;" in text and "PASSWORD 'SCRAM-SHA-256$" in text
    assert get_backup(console.services.store, 1).encryption == "age"


def test_verify_latest_passes_with_the_identity(tmp_path, sample_dsn, key):
    keyfile, public = key
    console = encrypted_console(tmp_path, sample_dsn, public, keyfile)
    assert "succeeded" in console.run("/backup main")
    out = console.run("/backup verify latest")
    assert "Drill of backup #1 (main) passed" in out, out
    assert get_backup(console.services.store, 1).verification == "verified"


def databases(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


@pytest.mark.parametrize("identity", ["none", "missing", "other key", "readable by others"])
def test_without_a_usable_identity_nothing_is_asked_or_created(tmp_path, sample_dsn, key, identity):
    keyfile, public = key
    other = tmp_path / "other.txt"
    if identity == "other key":
        keygen(other)
    elif identity == "readable by others":
        other.write_bytes(keyfile.read_bytes())
        os.chmod(other, 0o644)
    path = {"none": None, "missing": tmp_path / "nope.txt"}.get(identity, other)
    console = encrypted_console(tmp_path, sample_dsn, public, path)
    assert "succeeded" in console.run("/backup main")
    before = databases(sample_dsn)
    jobs_before = len(recent_jobs(console.services.store, "main", limit=100))
    expected = {"none": "set storage.identity_file to the private key of one of its recipients",
                "missing": "does not exist", "other key": "is not one of this backup's recipients",
                "readable by others": "readable by others"}[identity]

    out = console.run("/restore latest")
    assert "backup #1 cannot be restored here" in out and expected in out, out
    assert "Restore request" not in out and "Waiting for" not in out
    assert request_state.get_request(console.services.store, 1) is None  # no request, so nobody was asked

    out = console.run("/backup verify latest")
    assert "backup #1 cannot be restored here" in out and expected in out, out
    assert "Drill" not in out
    assert databases(sample_dsn) == before  # no scratch database, no target
    assert len(recent_jobs(console.services.store, "main", limit=100)) == jobs_before  # no restore or drill job
    assert get_backup(console.services.store, 1).verification == "unverified"


def test_restore_of_an_encrypted_backup_approved_is_restored(tmp_path, sample_dsn, key):
    keyfile, public = key
    console = encrypted_console(tmp_path, sample_dsn, public, keyfile)
    assert "succeeded" in console.run("/backup main")
    before = content_of(sample_dsn)
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE id % 2 = 0")
    assert content_of(sample_dsn) != before
    out = console.run("/restore latest")
    assert "Waiting for 1 approval(s)" in out, out
    out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "Restore request #1 restored backup #1" in out, out
    assert content_of(sample_dsn) == before
    # the safety snapshot taken first is encrypted too
    snapshot = [r for r in list_backups(console.services.store) if r.kind == "pre-restore"]
    assert snapshot and snapshot[0].encryption == "age"
    assert stored(tmp_path, snapshot[0].key).read_bytes().startswith(b"age-encryption.org/v1\n")


def stored_files(tmp_path) -> list[Path]:
    root = tmp_path / "backups" / "main"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_failing_globals_dump_fails_the_backup_and_stores_nothing(tmp_path, sample_dsn, key):
    """Role passwords need a superuser to read pg_authid: a backup role without it cannot take them."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    _, public = key
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS backup_only")
        conn.execute("CREATE ROLE backup_only LOGIN PASSWORD 'backup-only-pw'")  # reads the data, not pg_authid
        for schema in ("public", "reporting"):
            conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO backup_only")
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO backup_only")
            conn.execute(f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO backup_only")
    params = conninfo_to_dict(sample_dsn) | {"user": "backup_only", "password": "backup-only-pw"}
    try:
        console = encrypted_console(tmp_path, make_conninfo(**params), public, None)
        out = console.run("/backup main")
        assert "Backup #1 failed: pg_dumpall exited with status 1" in out and "pg_authid" in out, out
        assert "Nothing was stored as a backup." in out and "backup-only-pw" not in out
        assert list_backups(console.services.store) == [] and stored_files(tmp_path) == []
        console.services.close()
    finally:
        with psycopg.connect(sample_dsn, autocommit=True) as conn:
            conn.execute("DROP OWNED BY backup_only")
            conn.execute("DROP ROLE backup_only")


def test_the_globals_file_goes_when_the_backup_fails_after_it(tmp_path, sample_dsn, monkeypatch):
    from commands.errors import StorageError

    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS))
    storage = console.services.storage
    put_bytes = storage.put_bytes

    def refuse_manifests(key, data):
        if key.endswith(".manifest.json"):
            raise StorageError(f"storing {key} failed: the bucket said no")
        return put_bytes(key, data)

    monkeypatch.setattr(storage, "put_bytes", refuse_manifests)
    out = console.run("/backup main")
    assert "Backup #1 failed" in out and "the bucket said no" in out
    assert stored_files(tmp_path) == []  # neither the artifact nor its globals file
    monkeypatch.undo()
    assert "Backup #2 of main succeeded" in console.run("/backup main")
    [record] = list_backups(console.services.store)
    assert record.globals_file["passwords"] is False and record.roles == ("postgres",)
    text = stored(tmp_path, record.globals_file["key"]).read_text()
    assert "CREATE ROLE postgres;" in text and "PASSWORD" not in text  # unencrypted: --no-role-passwords


@pytest.mark.parametrize("value, message", [
    (["age1nope"], r"storage.encrypt_to\[1\]: 'age1nope' is not an age public key"),
    (["AGE-SECRET-KEY-1QQQQ"], r"storage.encrypt_to\[1\]: that is a private key"),
    ("age1x", r"storage.encrypt_to: expected a list of age public keys"),
    ([], r"storage.encrypt_to: expected a list of age public keys"),
])
def test_encrypt_to_is_checked_when_the_config_loads(tmp_path, key, value, message):
    from commands.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as caught:
        make_settings(tmp_path, None, storage={"url": "file:///tmp/x", "encrypt_to": [key[1], *value]
                                               if isinstance(value, list) and value else value})
    assert "QQQQ" not in str(caught.value)  # a private key pasted by mistake is never echoed
