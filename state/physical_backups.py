"""The catalog of physical backups (pgBackRest), beside the logical one (state/backups.py).

A row exists only for a backup `pgbackrest info` reported after it succeeded. Its id is its job's
id, like a logical backup's, so one number names any backup. Rows are never deleted: when
pgBackRest's retention expires a backup, `expired_at` is set and lists leave it out.
"""

from __future__ import annotations

from dataclasses import dataclass

from state.store import Store


@dataclass(frozen=True)
class PhysicalBackupRecord:
    id: int
    database: str
    kind: str  # manual | scheduled
    stanza: str
    label: str  # pgBackRest's backup set, e.g. 20261128-020000F_20261128-030000I
    type: str  # full | diff | incr
    created_at: str
    size: int  # the database size restored from this backup
    delta: int  # bytes this backup copied
    repo_size: int  # bytes it takes in the repository
    repo_delta: int
    wal_start: str | None
    wal_stop: str | None
    lsn_start: str | None
    lsn_stop: str | None
    prior: str | None = None  # the backup a diff or incr builds on
    requested_by: str | None = None
    started_at: str | None = None
    stopped_at: str | None = None
    duration_s: float | None = None
    checksum_errors: bool = False
    pgbackrest_version: str | None = None
    format: str = "physical"
    verification: str = "unverified"
    verified_at: str | None = None
    restore_seconds: float | None = None
    expired_at: str | None = None
    job_id: int | None = None

    @property
    def wal_range(self) -> str:
        return f"{self.wal_start or '?'}..{self.wal_stop or '?'}"

    @property
    def is_full(self) -> bool:
        """Never a logical "full backup": latest, retention and logical drills do not count it."""
        return False


def _record(row: dict) -> PhysicalBackupRecord:
    values = dict(row)
    values["checksum_errors"] = bool(values["checksum_errors"])
    return PhysicalBackupRecord(**values)


def add_physical_backup(store: Store, record: PhysicalBackupRecord) -> None:
    values = record.__dict__.copy()
    values["checksum_errors"] = int(record.checksum_errors)
    with store.db() as db:
        db["physical_backups"].insert(values)


def get_physical_backup(store: Store, backup_id: int) -> PhysicalBackupRecord | None:
    with store.db() as db:
        rows = list(db.query("SELECT * FROM physical_backups WHERE id = ?", [backup_id]))
    return _record(rows[0]) if rows else None


def get_physical_backup_by_label(store: Store, database: str, label: str) -> PhysicalBackupRecord | None:
    with store.db() as db:
        rows = list(db.query("SELECT * FROM physical_backups WHERE database = ? AND label = ?", [database, label]))
    return _record(rows[0]) if rows else None


def list_physical_backups(store: Store, database: str | None = None, limit: int | None = None,
                          include_expired: bool = False) -> list[PhysicalBackupRecord]:
    """Newest first."""
    clauses, params = [], []
    if database:
        clauses.append("database = ?")
        params.append(database)
    if not include_expired:
        clauses.append("expired_at IS NULL")
    sql = "SELECT * FROM physical_backups"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY created_at DESC, id DESC"
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    with store.db() as db:
        return [_record(row) for row in db.query(sql, params)]


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
    with store.db() as db:
        db.execute("UPDATE physical_backups SET verification = ?, verified_at = ?, restore_seconds = ? WHERE id = ?",
                   [status, at, restore_seconds, backup_id])
