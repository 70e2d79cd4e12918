"""What only physical backups (pgBackRest) have: labels, and expiry by pgBackRest's retention.

The type and its row mapping are state/backups.py's `PhysicalBackupRecord`, a `Backup` variant. Its
id is its job's id, like a logical backup's, so one number names any backup. Rows are never deleted:
when pgBackRest's retention expires a backup, `expired_at` is set and lists leave it out.
"""

from __future__ import annotations

from state.backups import PHYSICAL, PHYSICAL_TABLE, PhysicalBackupRecord, insert, select, set_verified
from state.store import Store


def add_physical_backup(store: Store, record: PhysicalBackupRecord) -> None:
    insert(store, record)


def get_physical_backup(store: Store, backup_id: int) -> PhysicalBackupRecord | None:
    rows = select(store, PHYSICAL_TABLE, {"id": backup_id}, include_gone=True)
    return rows[0] if rows else None


def get_physical_backup_by_label(store: Store, database: str, label: str) -> PhysicalBackupRecord | None:
    rows = select(store, PHYSICAL_TABLE, {"label": label}, database=database, include_gone=True)
    return rows[0] if rows else None


def list_physical_backups(store: Store, database: str | None = None, limit: int | None = None,
                          include_expired: bool = False) -> list[PhysicalBackupRecord]:
    """Newest first."""
    return select(store, PHYSICAL_TABLE, database=database, limit=limit, include_gone=include_expired)


def mark_expired(store: Store, database: str, kept_labels: set[str], at: str) -> list[str]:
    """Set expired_at on `database`'s rows whose label pgBackRest no longer lists; return those labels."""
    with store.immediate() as db:
        rows = list(db.query("SELECT label FROM physical_backups WHERE database = ? AND expired_at IS NULL", [database]))
        gone = [row["label"] for row in rows if row["label"] not in kept_labels]
        for label in gone:
            db.execute("UPDATE physical_backups SET expired_at = ? WHERE database = ? AND label = ?",
                       [at, database, label])
    return gone


def set_physical_verification(store: Store, backup_id: int, status: str, at: str,
                              restore_seconds: float | None) -> None:
    set_verified(store, PHYSICAL, backup_id, status, at, restore_seconds)
