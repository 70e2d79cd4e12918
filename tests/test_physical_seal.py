"""Physical backups are sealed: the bot signs the sha256 of the pgBackRest manifest of each set it takes,
and a restore of the set is refused when the manifest in the repository is not that one: at plan time,
before anyone is asked, and again after the approval, before pgBackRest restores anything. pgBackRest
itself checks every restored file against the manifest, so the seal authenticates the whole base backup.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import time
from datetime import timedelta
from pathlib import Path

from commands.pg.pgbackrest.backups import backup
from commands.pg.pgbackrest.restored_cluster import restore_to_new_datadir
from state import approvals as request_state
from state.physical_backups import list_physical_backups
from state.restored_clusters import live_restored_clusters
from tests.test_point_in_time_restore import pitr_console
from tests.test_restore import approve, message_id


def manifest_path(setup, label: str) -> Path:
    return Path(setup.cfg.repo_path) / "backup" / setup.cfg.stanza / label / "backup.manifest"


@contextlib.contextmanager
def rewritten(path: Path):
    """The manifest changed in place, as a writer of the repository could (one checksum of one file), and
    put back afterwards: the session's other tests share this repository."""
    original = path.read_bytes()
    at = original.index(b'"checksum":"') + len(b'"checksum":"')
    changed = original[:at] + (b"0" if original[at:at + 1] != b"0" else b"1") + original[at + 1:]
    stat = path.stat()
    try:
        path.write_bytes(changed)
        yield
    finally:
        path.write_bytes(original)
        os.chown(path, stat.st_uid, stat.st_gid)


def test_a_physical_backup_is_sealed_and_a_changed_manifest_is_refused_before_anyone_is_asked(tmp_path,
                                                                                               pgbackrest_setup, reliability):
    dsn = pgbackrest_setup.create_database("seal_app")
    console = pitr_console(tmp_path, pgbackrest_setup, dsn)
    assert "succeeded" in console.run("/backup physical --type incr")
    record = list_physical_backups(console.services.store, "main")[0]
    manifest = manifest_path(pgbackrest_setup, record.label)
    seal = record.manifest_seal
    assert seal["label"] == record.label and seal["stanza"] == pgbackrest_setup.cfg.stanza
    assert seal["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert seal["signature"]["key_id"] == console.services.settings.signing.signing_key_id

    asked = console.run(f"/restore physical {record.label}")
    assert "Restore request #1" in asked, asked
    assert f"Provenance: backup set {record.label} of main sealed by this bot (key {seal['signature']['key_id']})" in asked
    assert "its manifest in the repository matches, and pgBackRest checks every file against it" in asked

    with rewritten(manifest):
        out = console.run(f"/restore physical {record.label}")
        assert "its manifest in the repository is not the one this bot sealed when it took the backup" in out, out
        assert "Someone changed the repository: nothing was restored" in out
        assert "Restore request #2" not in out and request_state.get_request(console.services.store, 2) is None
        assert "(only you)" in out  # refused privately, before any approver is asked

    # a seal edited in state (to match a changed manifest) does not verify without the key
    forged = {**seal, "manifest_sha256": "0" * 64}
    with console.services.store.db() as db:
        db.execute("UPDATE physical_backups SET manifest_seal = ? WHERE id = ?", [json.dumps(forged), record.id])
    out = console.run(f"/restore physical {record.label}")
    assert "its signature does not match (changed after signing, or forged)" in out, out
    assert request_state.get_request(console.services.store, 2) is None
    reliability("provenance", "a physical backup's pgBackRest manifest rewritten in the repository, and its seal "
                "edited in state", 2, "each refused at plan time, before any approver was asked; no request")


def test_a_manifest_changed_after_the_approval_stops_the_restore_before_pgbackrest_runs(tmp_path, pgbackrest_setup,
                                                                                       reliability):
    dsn = pgbackrest_setup.create_database("seal_after")
    console = pitr_console(tmp_path, pgbackrest_setup, dsn)
    assert "succeeded" in console.run("/backup physical --type incr")
    record = list_physical_backups(console.services.store, "main")[0]
    asked = console.run("/restore physical latest")
    request_id = int(re.search(r"Restore request #(\d+)", asked).group(1))
    datadir = Path(request_state.get_request(console.services.store, request_id).plan["datadir"])
    with rewritten(manifest_path(pgbackrest_setup, record.label)):  # the swap, between approval and restore
        done = approve(console, message_id(asked, f"Restore request #{request_id}"), "U0APP1")
    assert "its manifest in the repository is not the one this bot sealed" in done, done
    assert "and verified" not in done
    assert live_restored_clusters(console.services.store) == [] and not datadir.exists()
    reliability("provenance", "a physical backup's manifest rewritten between the approval and the restore", 1,
                "the restore failed before pgBackRest ran; no copy, no data directory")


def test_a_set_the_bot_did_not_take_is_restored_as_not_sealed(tmp_path, pgbackrest_setup):
    """A set taken by pgBackRest directly (its own schedule, say): no seal, and the plan says so."""
    dsn = pgbackrest_setup.create_database("seal_outside")
    console = pitr_console(tmp_path, pgbackrest_setup, dsn)
    first = backup(pgbackrest_setup.cfg, "incr")
    time.sleep(2.2)  # the plan's WAL switch then archives a commit after the moment
    moment = (first.stopped + timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S%z")
    asked = console.run(f'/restore --time "{moment}"')
    assert (f"Provenance: backup set {first.label} of main is not sealed (taken outside this bot, or without a "
            "signing key): pgBackRest's own checksums only") in asked, asked


def test_pgbackrest_itself_refuses_a_file_that_does_not_match_the_manifest(pgbackrest_setup):
    """Why sealing the manifest is enough for the base backup: one changed data file fails the restore."""
    cfg = pgbackrest_setup.cfg
    first = backup(cfg, "incr")  # its own set: the session's others stay as they are
    folder = Path(cfg.repo_path) / "backup" / cfg.stanza / first.label / "pg_data" / "global"
    victim = next(p for p in sorted(folder.iterdir()) if p.name.startswith("pg_control"))
    original = victim.read_bytes()
    stat = victim.stat()
    target = pgbackrest_setup.restore_dir()
    plain = subprocess.run(["zstd", "-dc", str(victim)], capture_output=True, check=True).stdout
    changed = plain[:100] + bytes([plain[100] ^ 0xFF]) + plain[101:]
    victim.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=changed, capture_output=True, check=True).stdout)
    os.chown(victim, stat.st_uid, stat.st_gid)
    try:
        try:
            restore_to_new_datadir(cfg, None, first.label, target)
            raised = ""
        except Exception as exc:  # noqa: BLE001 — what pgBackRest said is the assertion
            raised = str(exc)
        assert "does not match expected checksum" in raised, raised
    finally:
        victim.write_bytes(original)
        os.chown(victim, stat.st_uid, stat.st_gid)
