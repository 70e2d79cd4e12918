"""The backups catalog: a row exists only for an artifact that is complete and stored."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from state.store import Store


@dataclass(frozen=True)
class BackupRecord:
    id: int
    database: str
    kind: str
    format: str
    compression: str
    tables: tuple[str, ...]
    schema_only: bool
    note: str | None
    requested_by: str | None
    created_at: str
    duration_s: float | None
    storage_url: str
    key: str
    manifest_key: str
    size: int
    raw_size: int
    sha256: str
    pg_dump_version: str | None
    server_version: str | None
    database_size: int | None
    row_counts: dict[str, int] = field(default_factory=dict)
    not_valid_constraints: tuple[str, ...] = ()
    verification: str = "unverified"
    verified_at: str | None = None
    restore_seconds: float | None = None
    pruned_at: str | None = None
    prune_reason: str | None = None
    job_id: int | None = None
    objects: dict | None = None  # {"schemas": [...], "tables": [...]}: see commands.pg.snapshot.table_objects
    dbname: str | None = None  # the PostgreSQL database it was taken of
    encryption: str | None = None  # "age" when the stored artifact is age-encrypted
    recipients: tuple[str, ...] = ()  # the age public keys it was encrypted to
    roles: tuple[str, ...] = ()  # roles the database's objects are owned by or granted to
    role_definitions: tuple[dict, ...] = ()  # their attributes and memberships (commands.pg.globals)
    globals_file: dict | None = None  # {"key", "sha256", "size", "passwords"}: pg_dumpall --globals-only
    signed_by: str | None = None  # the key id that signed its manifest (commands/signing.py); None: taken unsigned
    rebuilt_from: str | None = None  # the manifest a catalog rebuild catalogued it from; None: this bot took it

    @property
    def row_total(self) -> int:
        return sum(self.row_counts.values())

    @property
    def is_full(self) -> bool:
        """A whole-database backup with data, taken of the configured database itself: what `latest`,
        retention's keep rules, the RPO and drills mean by "a backup"."""
        return not self.tables and not self.schema_only and self.kind in FULL_KINDS

    @property
    def what(self) -> str:
        """The backup's kind, as people read it: manual, scheduled, pre-restore, schema-only, tables."""
        parts = [self.kind]
        if self.schema_only:
            parts.append("schema-only")
        if self.tables:
            parts.append("tables")
        return " ".join(parts)


FULL_KINDS = ("manual", "scheduled")
_JSON_LISTS = ("recipients", "roles", "role_definitions")  # columns holding a JSON list


def _record(row: dict) -> BackupRecord:
    values = dict(row)
    values["tables"] = tuple(json.loads(values["tables"] or "[]"))
    values["row_counts"] = json.loads(values["row_counts"] or "{}")
    values["not_valid_constraints"] = tuple(json.loads(values["not_valid_constraints"] or "[]"))
    values["schema_only"] = bool(values["schema_only"])
    values["objects"] = json.loads(values["objects"]) if values.get("objects") else None
    for name in _JSON_LISTS:
        values[name] = tuple(json.loads(values.get(name) or "[]"))
    values["globals_file"] = json.loads(values["globals_file"]) if values.get("globals_file") else None
    return BackupRecord(**values)


def add_backup(store: Store, record: BackupRecord) -> None:
    values = record.__dict__.copy()
    values["tables"] = json.dumps(list(record.tables))
    values["row_counts"] = json.dumps(record.row_counts)
    values["not_valid_constraints"] = json.dumps(list(record.not_valid_constraints))
    values["schema_only"] = int(record.schema_only)
    values["objects"] = json.dumps(record.objects) if record.objects is not None else None
    for name in _JSON_LISTS:
        values[name] = json.dumps(list(getattr(record, name) or ()))
    values["globals_file"] = json.dumps(record.globals_file) if record.globals_file is not None else None
    with store.db() as db:
        db["backups"].insert(values)


def get_backup(store: Store, backup_id: int) -> BackupRecord | None:
    with store.db() as db:
        rows = list(db.query("SELECT * FROM backups WHERE id = ?", [backup_id]))
    return _record(rows[0]) if rows else None


def list_backups(
    store: Store, database: str | None = None, limit: int | None = None, include_pruned: bool = False,
    kinds: tuple[str, ...] | None = None,
) -> list[BackupRecord]:
    """Newest first."""
    clauses, params = [], []
    if database:
        clauses.append("database = ?")
        params.append(database)
    if not include_pruned:
        clauses.append("pruned_at IS NULL")
    if kinds:
        clauses.append(f"kind IN ({', '.join('?' for _ in kinds)})")
        params.extend(kinds)
    sql = "SELECT * FROM backups"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY created_at DESC, id DESC"
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    with store.db() as db:
        return [_record(row) for row in db.query(sql, params)]


def latest_backup(store: Store, database: str, full_only: bool = False) -> BackupRecord | None:
    """The newest backup of `database`; with `full_only`, the newest full one (`BackupRecord.is_full`)."""
    for record in list_backups(store, database):
        if not full_only or record.is_full:
            return record
    return None


def set_verification(store: Store, backup_id: int, status: str, at: str, restore_seconds: float | None) -> None:
    with store.db() as db:
        db.execute(
            "UPDATE backups SET verification = ?, verified_at = ?, restore_seconds = ? WHERE id = ?",
            [status, at, restore_seconds, backup_id],
        )


def mark_pruned(store: Store, backup_id: int, at: str, reason: str) -> None:
    with store.db() as db:
        db.execute("UPDATE backups SET pruned_at = ?, prune_reason = ? WHERE id = ?", [at, reason, backup_id])


def add_rebuilt_backup(store: Store, record: BackupRecord, source: str) -> BackupRecord:
    """Catalogue a backup found in storage by a catalog rebuild, under its original id.

    A finished job with the same id comes with it: backup ids are job ids, so the jobs the bot starts
    afterwards get ids above every rebuilt backup instead of colliding with one.
    """
    record = dataclasses.replace(record, job_id=record.id, rebuilt_from=source)
    with store.db() as db:
        db.execute(
            "INSERT INTO jobs (id, kind, database, status, requested_by, started_at, finished_at, detail, reported)"
            " VALUES (?, 'backup', ?, 'succeeded', ?, ?, ?, ?, 1)",
            [record.id, record.database, record.requested_by, record.created_at, record.created_at,
             json.dumps({"rebuilt_from": source, "kind": record.kind, "format": record.format})],
        )
    try:
        add_backup(store, record)
    except BaseException:
        with store.db() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", [record.id])
        raise
    return record
