"""Disaster recovery from the command line, with no Slack and no running bot.

`backupbot catalog rebuild [--verify]` recreates the backup catalog from the manifests in storage
into an empty state database; `backupbot state restore [KEY] [--force]` brings back a copy of the
state database (catalog, requests, incidents, audit log) that the bot stored after its jobs. Both
take the state database's instance lock, so they refuse while a bot runs on it.
"""

from __future__ import annotations

from pathlib import Path

from commands.backup.catalog_rebuild import rebuild_catalog
from commands.errors import UsageError
from commands.settings import load_settings
from commands.storage import open_storage
from commands.storage.encryption import Decryptor
from state.backup_copy import restore_state
from state.lock import InstanceLock
from state.store import Store


def run_catalog_rebuild(config: str | None, verify: bool, out=print) -> int:
    """Catalogue every backup whose manifest and artifact check out; 1 when some did not."""
    settings = load_settings(config)
    lock = InstanceLock(settings.state_path).acquire()
    try:
        storage = open_storage(settings.storage_url, settings.identity_file)
        report = rebuild_catalog(storage, Store(settings.state_path), keyring=settings.signing,
                                 encrypt_to=settings.encrypt_to, verify_sha256=verify)
        out(report.text())
        return 0 if report.ok else 1
    finally:
        lock.release()


def run_state_restore(config: str | None, key: str | None, force: bool, out=print) -> int:
    """Replace the state database with a stored copy (the newest, or KEY)."""
    settings = load_settings(config)
    target = Path(settings.state_path).expanduser()
    lock = InstanceLock(settings.state_path).acquire()
    try:
        if target.exists() and not force:
            raise UsageError(f"{target} already exists; `backupbot state restore --force` replaces it "
                             "(the bot is not running: its lock is free)")
        storage = open_storage(settings.storage_url, settings.identity_file)
        copy = restore_state(storage, target, key, keyring=settings.signing, overwrite=force,
                             decryptor=lambda recipients: Decryptor(settings.identity_file, recipients=recipients))
        taken = f", taken at {copy.taken_at}" if copy.taken_at else ""
        out(f"State database {target} restored from {storage.location(copy.key)}{taken} "
            f"({copy.size:,} bytes, sha256 {copy.sha256[:12]}).")
        return 0
    finally:
        lock.release()
