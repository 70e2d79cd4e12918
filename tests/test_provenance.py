"""Storage is not trusted: someone who can write to the bucket forges what the bot reads back.

Each test plays the insider with write access to the store (a local folder and S3), with and without
the age public key, and checks that the bot catalogues, plans and restores only what it signed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from commands.backup.manifest import manifest_document
from commands.errors import ConfigError
from commands.signing import write_key_file
from commands.storage import open_storage
from commands.storage.encryption import Encryptor
from state.backups import get_backup, list_backups
from tests.builders import FakeClock, make_console, make_settings, suite_signing_key

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1"]}
EVIL_SQL = b"""CREATE ROLE forged_admin SUPERUSER LOGIN;
COPY (SELECT 1) TO PROGRAM 'touch /tmp/backupbot-forged-sentinel';
"""


@pytest.fixture(params=["local", "s3"])
def storage_url(request, tmp_path) -> str:
    if request.param == "s3":
        return request.getfixturevalue("s3_storage_url")
    return f"file://{tmp_path / 'backups'}"


def write_config(tmp_path: Path, storage_url: str, keys: list[str], extra: str = "") -> str:
    config = tmp_path / "backupbot.toml"
    files = ", ".join(f'"{k}"' for k in keys)
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n[storage]\nurl = "{storage_url}"\n'
                      f'signing_key_files = [{files}]\n{extra}[access]\noperators = ["U0OPS"]\napprovers = ["U0APP1"]\n')
    return str(config)


def backupbot(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {"PATH": os.environ["PATH"], **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
                **(env or {})}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=full_env,
                          timeout=180)


def lose_the_state_database(settings, console) -> None:
    console.services.close()
    for suffix in ("", "-wal", "-shm"):
        Path(settings.state_path + suffix).unlink(missing_ok=True)


def forge_backup(storage, genuine, backup_id: int, data: bytes, *, fmt: str = "plain", encrypt_to: tuple = (),
                 signature: dict | None = None) -> str:
    """What an insider writes: an artifact and a manifest that matches it in every checked field (id,
    size, sha256, format), modelled on a genuine manifest, so only its authentication can give it away."""
    if encrypt_to:
        encryptor = Encryptor(encrypt_to)
        data = encryptor.compress(data) + encryptor.flush()
    key = f"main/2026/12/backup-{backup_id:06d}-main-20261201T000000Z.sql" + (".age" if encrypt_to else "")
    document = manifest_document(genuine)
    document.update(backup_id=backup_id, artifact=key, format=fmt, compression="none", sha256=hashlib.sha256(data).hexdigest(),
                    size=len(data), raw_size=len(data), tables=[], schema_only=False, kind="manual",
                    encryption="age" if encrypt_to else None, recipients=list(encrypt_to), globals_file=None,
                    row_counts={}, objects=None)
    if signature is not None:
        document["signature"] = signature
    storage.put_bytes(key, data)
    storage.put_bytes(key + ".manifest.json", json.dumps(document).encode())
    return key


def test_a_forged_plain_sql_backup_is_never_catalogued_planned_or_run(tmp_path, sample_dsn, storage_url, pg_cluster,
                                                                       reliability):
    """The reviewer's attack: a forged artifact with a matching manifest, the catalog rebuilt from storage."""
    settings = make_settings(tmp_path, sample_dsn, storage_url=storage_url, access=ACCESS)
    console = make_console(settings, clock=FakeClock())
    assert "Backup #1 of main succeeded" in console.run("/backup --format plain")
    storage = open_storage(storage_url)
    genuine = get_backup(console.services.store, 1)
    forged_key = forge_backup(storage, genuine, 2, EVIL_SQL)  # newer: it would be `latest`
    lose_the_state_database(settings, console)

    result = backupbot("catalog", "rebuild", "--verify", "--config", write_config(tmp_path, storage_url,
                                                                                  [suite_signing_key()]))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 backup(s) catalogued (#1)" in result.stdout
    assert f"({forged_key}.manifest.json): the manifest {forged_key}.manifest.json is not signed" in result.stdout
    assert "Traceback" not in result.stderr

    console = make_console(settings)
    out = console.run("/restore latest --dry-run")
    assert "restore backup #1 of main" in out and "#2" not in out
    assert "Provenance: manifest signed with key" in out and "catalogued by a catalog rebuild" in out
    assert "there is no backup #2" in console.run("/restore 2")
    with psycopg.connect(pg_cluster.dsn("postgres")) as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'forged_admin'").fetchone()[0] == 0
    assert not Path("/tmp/backupbot-forged-sentinel").exists()
    reliability("provenance", f"forged plain-SQL artifact with a matching unsigned manifest ({storage_url.split(':')[0]}), "
                "then catalog rebuild and /restore latest", 1,
                "not catalogued (exit 1, 'not signed'); latest is the genuine backup; no role, no program run")


def test_encrypting_to_the_public_key_or_signing_with_another_key_proves_nothing(tmp_path, sample_dsn, storage_url,
                                                                                 reliability):
    identity = tmp_path / "age.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    identity.chmod(0o600)
    public = subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True).stdout.strip()
    storage_section = {"encrypt_to": [public], "identity_file": str(identity)}
    settings = make_settings(tmp_path, sample_dsn, storage_url=storage_url, access=ACCESS, storage=storage_section)
    console = make_console(settings, clock=FakeClock())
    assert "Backup #1 of main succeeded" in console.run("/backup")
    storage = open_storage(storage_url, str(identity))
    genuine = get_backup(console.services.store, 1)
    # encrypted to the bot's own recipient (a public key anyone may hold), unsigned
    forge_backup(storage, genuine, 2, EVIL_SQL, encrypt_to=(public,))
    # signed, but with the insider's own key: a well-formed signature from a key the bot does not hold
    attacker = write_key_file(tmp_path / "attacker.key")
    body = manifest_document(genuine) | {"backup_id": 3}
    forged = {"alg": "hmac-sha256", "key_id": attacker.key_id, "mac": attacker.mac("backup-manifest", body)}
    key3 = forge_backup(storage, genuine, 3, EVIL_SQL, encrypt_to=(public,), signature=forged)
    # the bot's key id copied onto a forged body: the MAC cannot match
    stolen_id = {"alg": "hmac-sha256", "key_id": settings.signing.signing_key_id, "mac": "00" * 32}
    key4 = forge_backup(storage, genuine, 4, EVIL_SQL, encrypt_to=(public,), signature=stolen_id)
    lose_the_state_database(settings, console)

    extra = f'encrypt_to = ["{public}"]\nidentity_file = "{identity}"\n'
    result = backupbot("catalog", "rebuild", "--config", write_config(tmp_path, storage_url, [suite_signing_key()], extra))
    assert result.returncode == 1
    assert "1 backup(s) catalogued (#1)" in result.stdout, result.stdout
    assert "is not signed" in result.stdout
    assert f"the manifest {key3}.manifest.json is signed with key '{attacker.key_id}', which is none of the configured" \
        in result.stdout
    assert f"the manifest {key4}.manifest.json: its signature does not match" in result.stdout
    assert "3 problem(s), not catalogued" in result.stdout
    reliability("provenance", f"forged manifests ({storage_url.split(':')[0]}): encrypted to the bot's age recipient, "
                "signed with another key, the bot's key id on a forged MAC", 3, "none catalogued, each reason listed")


def test_a_replaced_manifest_or_artifact_is_refused_before_anyone_is_asked(tmp_path, sample_dsn, storage_url, reliability):
    settings = make_settings(tmp_path, sample_dsn, storage_url=storage_url, access=ACCESS)
    console = make_console(settings, clock=FakeClock())
    for _ in range(3):
        assert "succeeded" in console.run("/backup --format plain")
    storage = open_storage(storage_url)
    one, two, three = (get_backup(console.services.store, i) for i in (1, 2, 3))

    # 1: the manifest swapped for an unsigned one that tells the same story
    storage.put_bytes(one.manifest_key, json.dumps(manifest_document(one)).encode())
    out = console.run("/restore 1")
    assert "was signed with key" in out and "its manifest in storage is not signed: it was replaced" in out
    # 2: a signed manifest whose row counts were edited (what the restore's verification relies on)
    document = json.loads(storage.get_bytes(two.manifest_key))
    document["row_counts"] = {name: 0 for name in document["row_counts"]}
    storage.put_bytes(two.manifest_key, json.dumps(document).encode())
    out = console.run("/restore 2")
    assert "its signature does not match" in out
    # 3: the artifact's bytes replaced (same size) under its genuine signed manifest
    stored = bytearray(storage.get_bytes(three.key))
    stored[len(stored) // 2] ^= 1
    storage.put_bytes(three.key, bytes(stored))
    out = console.run("/restore 3")
    assert "backup #3 is corrupted" in out
    assert not [m for m in console.messages.values() if "Restore request #" in m.text]  # nobody was asked
    reliability("provenance", f"catalogued backup's manifest made unsigned, its signed row counts edited, its artifact "
                f"replaced ({storage_url.split(':')[0]})", 3, "each refused before anyone is asked, saying why")


def test_signed_manifest_of_another_backup_is_a_replay_and_refused(tmp_path, sample_dsn, reliability):
    settings = make_settings(tmp_path, sample_dsn, access=ACCESS)
    console = make_console(settings, clock=FakeClock())
    console.run("/backup --format plain")
    console.run("/backup --format plain")
    storage = open_storage(settings.storage_url)
    one, two = get_backup(console.services.store, 1), get_backup(console.services.store, 2)
    storage.put_bytes(two.manifest_key, storage.get_bytes(one.manifest_key))  # a genuine signature, the wrong backup
    out = console.run("/restore 2 --dry-run")
    assert "its signed manifest does not describe the catalog's backup" in out and "id" in out
    assert "Dry run" not in out
    reliability("provenance", "a genuine signed manifest replayed as another backup's", 1, "refused: it describes another backup")


def test_backups_from_the_future_and_unencrypted_ones_under_encrypt_to_are_refused(tmp_path, sample_dsn):
    clock = FakeClock()
    settings = make_settings(tmp_path, sample_dsn, access=ACCESS)
    console = make_console(settings, clock=clock)
    assert "Backup #1 of main succeeded" in console.run("/backup")
    clock.now -= timedelta(days=1)  # the bot's clock now says the backup was taken tomorrow
    out = console.run("/restore latest --dry-run")
    assert "is dated" in out and "in the future" in out and "Dry run" not in out
    clock.now += timedelta(days=1)
    console.services.close()

    identity = tmp_path / "age.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    identity.chmod(0o600)
    public = subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True).stdout.strip()
    encrypted = make_settings(tmp_path, sample_dsn, access=ACCESS,
                              storage={"encrypt_to": [public], "identity_file": str(identity)})
    console = make_console(encrypted, clock=clock)
    out = console.run("/restore 1 --dry-run")
    assert "backup #1 is not encrypted, but [storage] encrypt_to is set" in out
    assert "is not encrypted" in console.run("/backup verify 1")


def test_backups_taken_before_signing_keep_working_while_their_catalog_row_exists(tmp_path, sample_dsn):
    unsigned = make_settings(tmp_path, sample_dsn, access=ACCESS, storage={"signing_key_files": []})
    console = make_console(unsigned, clock=FakeClock())
    assert "Backup #1 of main succeeded" in console.run("/backup")
    stored = json.loads(open_storage(unsigned.storage_url).get_bytes(get_backup(console.services.store, 1).manifest_key))
    assert "signature" not in stored
    console.services.close()

    signed = make_settings(tmp_path, sample_dsn, access=ACCESS)  # signing adopted on the same state and store
    console = make_console(signed, clock=FakeClock())
    out = console.run("/restore 1 --dry-run")
    assert "Provenance: unsigned (taken before signing was set up; trusted by the sha256 in this bot's catalog)" in out
    assert "Drill of backup #1 (main) passed" in console.run("/backup verify 1")
    assert "Backup #3 of main succeeded" in console.run("/backup")  # the drill was job #2
    assert "Provenance: manifest signed with key" in console.run("/restore 3 --dry-run")
    lose_the_state_database(signed, console)

    # from storage alone, only what is signed comes back
    result = backupbot("catalog", "rebuild", "--config", write_config(tmp_path, signed.storage_url, [suite_signing_key()]),
                       env={"DATABASE_URL": sample_dsn})
    assert result.returncode == 1
    assert "1 backup(s) catalogued (#3)" in result.stdout and "is not signed" in result.stdout


def test_rotated_keys_verify_what_they_signed_and_the_first_signs(tmp_path, sample_dsn):
    old_key = write_key_file(tmp_path / "old.key")
    new_key = write_key_file(tmp_path / "new.key")
    old = make_settings(tmp_path, sample_dsn, access=ACCESS, storage={"signing_key_files": [old_key.source]})
    console = make_console(old, clock=FakeClock())
    console.run("/backup")
    console.services.close()
    rotated = make_settings(tmp_path, sample_dsn, access=ACCESS,
                            storage={"signing_key_files": [new_key.source, old_key.source]})
    console = make_console(rotated, clock=FakeClock())
    assert f"Provenance: manifest signed with key {old_key.key_id}" in console.run("/restore 1 --dry-run")
    console.run("/backup")
    assert f"Provenance: manifest signed with key {new_key.key_id}" in console.run("/restore 2 --dry-run")
    assert [r.signed_by for r in sorted(list_backups(console.services.store), key=lambda r: r.id)] == \
        [old_key.key_id, new_key.key_id]
    console.services.close()
    dropped = make_settings(tmp_path, sample_dsn, access=ACCESS, storage={"signing_key_files": [new_key.source]})
    console = make_console(dropped, clock=FakeClock())
    out = console.run("/restore 1 --dry-run")
    assert f"signed with key '{old_key.key_id}', which is none of the configured keys" in out


def test_a_forged_state_copy_or_pointer_is_refused(tmp_path, storage_url, reliability):
    settings = make_settings(tmp_path / "host", None, storage_url=storage_url)
    console = make_console(settings)
    assert "Incident #1" in console.run("/incident open Bucket leaked")
    from commands.backup.state_copy import copy_now

    genuine = copy_now(console.services)
    storage = open_storage(storage_url)
    config = write_config(tmp_path / "host", storage_url, [suite_signing_key()])
    lose_the_state_database(settings, console)

    # a forged state database (its own catalog, its own approvals) with a pointer that names it correctly
    forged_db = tmp_path / "forged.db"
    forger = make_console(make_settings(tmp_path / "forger", None))
    forger.run("/incident open Nothing to see")
    forger.services.close()
    forged_db.write_bytes(Path(tmp_path / "forger" / "state.db").read_bytes())
    data = forged_db.read_bytes()
    key = "_state/backupbot-state-20991231T000000.000Z.db"
    storage.put_bytes(key, data)
    pointer = {"backupbot_state_copy": 1, "key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
               "taken_at": "2099-12-31T00:00:00+00:00", "recipients": []}
    storage.put_bytes("_state/latest.json", json.dumps(pointer).encode())
    storage.put_bytes(key + ".manifest.json", json.dumps(pointer).encode())

    result = backupbot("state", "restore", "--config", config)
    assert result.returncode == 1 and "_state/latest.json is not signed" in result.stderr, result.stdout + result.stderr
    result = backupbot("state", "restore", key, "--config", config)
    assert result.returncode == 1 and f"{key}.manifest.json is not signed" in result.stderr
    # the genuine copy's bytes replaced under its signed descriptor
    storage.put_bytes(genuine.key, data)
    result = backupbot("state", "restore", genuine.key, "--config", config)
    assert result.returncode == 1 and "is corrupted or was replaced" in result.stderr
    assert not Path(settings.state_path).exists()
    assert "Traceback" not in result.stderr
    reliability("provenance", f"forged state database with a matching pointer and descriptor, and a genuine copy's bytes "
                f"replaced ({storage_url.split(':')[0]})", 3, "state restore refuses each (exit 2); no state file written")


def test_state_copies_round_trip_signed(tmp_path):
    settings = make_settings(tmp_path / "host", None)
    console = make_console(settings)
    console.run("/incident open Primary lost")
    from commands.backup.state_copy import copy_now

    copy = copy_now(console.services)
    lose_the_state_database(settings, console)
    result = backupbot("state", "restore", "--config", write_config(tmp_path / "host", settings.storage_url,
                                                                   [suite_signing_key()]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert copy.sha256[:12] in result.stdout
    assert "Primary lost" in make_console(settings).run("/incident list")


def test_keys_are_checked_at_load_and_by_check(tmp_path, sample_dsn):
    loose = write_key_file(tmp_path / "loose.key")
    os.chmod(loose.source, 0o644)
    with pytest.raises(ConfigError, match=re.escape(f"{loose.source} may be read by others (mode 0644): chmod 600 it")):
        make_settings(tmp_path, sample_dsn, storage={"signing_key_files": [loose.source]})
    with pytest.raises(ConfigError, match="does not exist"):
        make_settings(tmp_path, sample_dsn, storage={"signing_key_files": [str(tmp_path / "nope.key")]})
    bogus = tmp_path / "bogus.key"
    bogus.write_text("hunter2\n")
    bogus.chmod(0o600)
    with pytest.raises(ConfigError, match="is not a backupbot signing key"):
        make_settings(tmp_path, sample_dsn, storage={"signing_key_files": [str(bogus)]})

    url = f"file://{tmp_path / 'b'}"
    result = backupbot("check", "--config", write_config(tmp_path, url, []), env={"DATABASE_URL": sample_dsn})
    assert result.returncode == 1 and "FAIL signing: no signing key" in result.stdout
    result = backupbot("check", "--config", write_config(tmp_path, url, [loose.source]), env={"DATABASE_URL": sample_dsn})
    assert result.returncode == 1 and "may be read by others" in result.stdout and "Traceback" not in result.stderr
    good = write_key_file(tmp_path / "good.key")
    result = backupbot("check", "--config", write_config(tmp_path, url, [good.source]), env={"DATABASE_URL": sample_dsn})
    assert f"ok   signing: key {good.key_id} ({good.source}) signs manifests and state copies" in result.stdout
    assert good.text not in result.stdout + result.stderr


def test_init_creates_a_private_signing_key_that_the_config_names(tmp_path):
    config = tmp_path / "etc" / "backupbot.toml"
    config.parent.mkdir()
    result = backupbot("init", "--config", str(config), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    key = tmp_path / "etc" / "backupbot.signing.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert f'signing_key_files = ["{key}"]' in config.read_text()
    assert "created its signing key" in result.stderr
    again = backupbot("init", "--config", str(config))
    assert again.returncode == 1 and "already exists" in again.stderr
    rotated = tmp_path / "etc" / "next.key"
    result = backupbot("init", "--config", str(config), "--signing-key", str(rotated))
    assert result.returncode == 0 and "Created signing key" in result.stderr and rotated.exists()
    assert oct(rotated.stat().st_mode & 0o777) == "0o600"


def test_a_huge_forged_manifest_is_refused_unread(tmp_path, sample_dsn):
    settings = make_settings(tmp_path, sample_dsn, access=ACCESS)
    console = make_console(settings, clock=FakeClock())
    console.run("/backup")
    record = get_backup(console.services.store, 1)
    manifest = tmp_path / "backups" / record.manifest_key
    with open(manifest, "r+b") as f:  # 65 MiB where a manifest should be
        f.truncate(65 << 20)
    out = console.run("/restore 1 --dry-run")
    assert "too large to be a backupbot manifest; not read" in out and "Dry run" not in out
    lose_the_state_database(settings, console)
    result = backupbot("catalog", "rebuild", "--config", write_config(tmp_path, settings.storage_url, [suite_signing_key()]))
    assert result.returncode == 1 and "too large to be a backupbot manifest" in result.stdout
