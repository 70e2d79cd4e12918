"""The state database copied to storage while the bot writes, and brought back on a new host."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from pathlib import Path

import pytest

from commands.errors import EncryptionError, IntegrityError, NotFoundError, ProvenanceError, UsageError
from commands.storage import open_storage
from commands.storage.encryption import Decryptor, Encryptor
from state.backup_copy import (
    LATEST_KEY,
    copy_state,
    latest_state_copy,
    list_state_copies,
    prune_state_copies,
    restore_state,
)
from state.incidents import add_entry, iter_entries, open_incident_in
from state.store import Store, utcnow_iso
from tests.builders import FakeClock, make_console, make_settings


def decrypting_with(identity_file):
    """What `backupbot state restore` passes: age with [storage] identity_file."""
    return lambda recipients: Decryptor(identity_file, recipients=recipients)


@pytest.fixture(params=["local", "s3"])
def storage_url(request, tmp_path) -> str:
    if request.param == "s3":
        return request.getfixturevalue("s3_storage_url")
    return f"file://{tmp_path / 'backups'}"


def test_copy_taken_while_a_writer_is_busy_restores_the_incident_timeline(tmp_path, storage_url):
    settings = make_settings(tmp_path / "old-host", None, storage_url=storage_url)
    console = make_console(settings)
    assert "Incident #1" in console.run("/incident open Primary database lost --sev 1")
    console.run("/incident note failover to the DR standby started")
    store = Store(settings.state_path)
    incident = open_incident_in(store, "C0OPS")
    storage = open_storage(storage_url)

    written, stop = [0], threading.Event()

    def writer() -> None:  # the bot keeps writing the timeline while the copy is taken
        while not stop.is_set():
            with store.immediate() as db:
                add_entry(db, incident.id, utcnow_iso(), "note", "U0OPS", f"writer note {written[0]}")
            written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 20:
            threading.Event().wait(0.01)
        before = written[0]
        copy = copy_state(settings.state_path, storage, keyring=settings.signing)
        after = written[0]
    finally:
        stop.set()
        thread.join()
    assert after > before, "the writer did not run during the copy"
    assert copy.key.startswith("_state/backupbot-state-") and copy.key.endswith(".db")
    assert list_state_copies(storage) == [copy.key]
    assert latest_state_copy(storage, settings.signing) == copy

    # the host is lost; on the new one the state comes back from storage
    new_host = make_settings(tmp_path / "new-host", None, storage_url=storage_url)
    restored = restore_state(storage, new_host.state_path, keyring=new_host.signing)
    assert restored.sha256 == copy.sha256
    assert oct(Path(new_host.state_path).stat().st_mode & 0o777) == "0o600"
    notes = [e.text for e in iter_entries(Store(new_host.state_path), incident.id) if e.text.startswith("writer note")]
    assert before <= len(notes) <= after
    assert notes == [f"writer note {i}" for i in range(len(notes))]  # one consistent moment, no gaps

    timeline = make_console(new_host).run("/incident timeline")
    assert "Primary database lost" in timeline
    assert "failover to the DR standby started" in timeline


def test_restore_refuses_to_clobber_and_checks_what_it_downloads(tmp_path):
    settings = make_settings(tmp_path / "host", None)
    make_console(settings).run("/incident open Disk full")
    storage = open_storage(settings.storage_url)
    with pytest.raises(NotFoundError, match="no state copy"):
        restore_state(storage, tmp_path / "restored.db", keyring=settings.signing)
    copy = copy_state(settings.state_path, storage, keyring=settings.signing, clock=FakeClock())
    with pytest.raises(UsageError, match="already exists"):
        restore_state(storage, settings.state_path, keyring=settings.signing)

    root = Path(settings.storage_url.removeprefix("file://"))
    stored = bytearray((root / copy.key).read_bytes())
    stored[5000] ^= 0xFF
    (root / copy.key).write_bytes(bytes(stored))
    with pytest.raises(IntegrityError, match="is corrupted or was replaced: its sha256"):
        restore_state(storage, tmp_path / "restored.db", keyring=settings.signing)
    assert not (tmp_path / "restored.db").exists()

    bogus = b"SQLite format 3\0" + b"\0" * 100
    (root / "_state" / "not-a-db.db").write_bytes(bogus)
    with pytest.raises(ProvenanceError, match="has no signed descriptor"):
        restore_state(storage, tmp_path / "restored.db", key="not-a-db.db", keyring=settings.signing)
    # even a file the bot itself signed is checked before it replaces anything
    body = {"backupbot_state_copy": 1, "key": "_state/not-a-db.db", "size": len(bogus),
            "sha256": hashlib.sha256(bogus).hexdigest(), "taken_at": "2026-01-01T00:00:00+00:00", "recipients": []}
    storage.put_bytes("_state/not-a-db.db.manifest.json", json.dumps(settings.signing.sign("state-copy", body)).encode())
    with pytest.raises(IntegrityError, match="not a usable SQLite database|not a backupbot state database"):
        restore_state(storage, tmp_path / "restored.db", key="not-a-db.db", keyring=settings.signing)


def test_encrypted_copy_needs_the_identity_and_decrypts_with_the_age_binary(tmp_path):
    keyfile = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(keyfile)], check=True, capture_output=True)
    keyfile.chmod(0o600)
    public = subprocess.run(["age-keygen", "-y", str(keyfile)], check=True, capture_output=True, text=True).stdout.strip()
    settings = make_settings(tmp_path / "host", None)
    make_console(settings).run("/incident open Bucket leaked")
    storage = open_storage(settings.storage_url)
    copy = copy_state(settings.state_path, storage, keyring=settings.signing, encryptor=Encryptor([public]),
                      recipients=[public])
    assert copy.key.endswith(".db.age")
    root = Path(settings.storage_url.removeprefix("file://"))
    plain = subprocess.run(["age", "-d", "-i", str(keyfile), str(root / copy.key)], check=True, capture_output=True).stdout
    assert plain.startswith(b"SQLite format 3\0")
    assert b"Bucket leaked" not in (root / copy.key).read_bytes()

    with pytest.raises(EncryptionError, match="set storage.identity_file"):
        restore_state(storage, tmp_path / "restored.db", keyring=settings.signing, decryptor=decrypting_with(None))
    new_host = make_settings(tmp_path / "new-host", None)
    restore_state(storage, new_host.state_path, keyring=new_host.signing, decryptor=decrypting_with(str(keyfile)))
    assert "Bucket leaked" in make_console(new_host).run("/incident list")


def test_old_copies_are_pruned_but_never_the_latest(tmp_path):
    settings = make_settings(tmp_path / "host", None)
    make_console(settings).run("/incident open Drill")
    storage = open_storage(settings.storage_url)
    clock = FakeClock()
    keys = []
    for _ in range(4):
        keys.append(copy_state(settings.state_path, storage, keyring=settings.signing, clock=clock).key)
        clock.advance(hours=1)
    assert list_state_copies(storage) == keys
    assert prune_state_copies(storage, keep=2) == keys[:2]
    assert list_state_copies(storage) == keys[2:]
    assert storage.exists(LATEST_KEY) and latest_state_copy(storage, settings.signing).key == keys[-1]
