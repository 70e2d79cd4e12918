"""The backups catalog, logical and physical: one `Backup` type, two variants, two tables.

A logical row (`backups`) exists only for an artifact that is complete and stored; a physical row
(`physical_backups`) only for a backup `pgbackrest info` reported after it succeeded. The tables
stay as they are; rows of both map to their variant here, through one `Table` description, so
reading, listing and verifying are written once. Rows are never deleted: a pruned or expired backup
keeps its row with `gone_at` set, and lists leave it out.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from state.statuses import JobStatus, Verification
from state.store import Store

LOGICAL, PHYSICAL = "logical", "physical"


@dataclass(frozen=True, kw_only=True)
class Backup:
    """What every catalogued backup is, logical or physical: one number (its job's id) names any of them.

    `engine` says which variant it is, and which table holds it; `kind` is why it was taken (manual,
    scheduled, pre-restore, ...), as it always was. Code that handles any backup takes a `Backup` and
    reads these fields; code for one engine takes its variant."""

    id: int
    database: str
    kind: str
    format: str
    created_at: str
    size: int
    requested_by: str | None = None
    duration_s: float | None = None
    verification: str = Verification.UNVERIFIED
    verified_at: str | None = None
    restore_seconds: float | None = None
    job_id: int | None = None
    engine: str = field(default=LOGICAL, init=False)

    @property
    def gone_at(self) -> str | None:
        """When it stopped being restorable (pruned, or expired by pgBackRest); None while it is."""
        return None

    @property
    def is_full(self) -> bool:
        """What `latest`, retention's keep rules, the RPO and logical drills mean by "a backup"."""
        return False


@dataclass(frozen=True, kw_only=True)
class BackupRecord(Backup):
    """A logical backup (pg_dump): an artifact in storage with its manifest."""

    compression: str
    tables: tuple[str, ...]
    schema_only: bool
    note: str | None
    storage_url: str
    key: str
    manifest_key: str
    raw_size: int
    sha256: str
    pg_dump_version: str | None
    server_version: str | None
    database_size: int | None
    row_counts: dict[str, int] = field(default_factory=dict)
    not_valid_constraints: tuple[str, ...] = ()
    pruned_at: str | None = None
    prune_reason: str | None = None
    objects: dict | None = None  # {"schemas": [...], "tables": [...]}: see commands.pg.snapshot.table_objects
    dbname: str | None = None  # the PostgreSQL database it was taken of
    encryption: str | None = None  # "age" when the stored artifact is age-encrypted
    recipients: tuple[str, ...] = ()  # the age public keys it was encrypted to
    roles: tuple[str, ...] = ()  # roles the database's objects are owned by or granted to
    role_definitions: tuple[dict, ...] = ()  # their attributes and memberships (commands.pg.globals)
    globals_file: dict | None = None  # {"key", "sha256", "size", "passwords"}: pg_dumpall --globals-only
    signed_by: str | None = None  # the key id that signed its manifest (commands/signing.py); None: taken unsigned
    rebuilt_from: str | None = None  # the manifest a catalog rebuild catalogued it from; None: this bot took it
    write_counters: dict | None = None  # pg_stat_user_tables at the snapshot (commands/pg/write_counters.py)
    engine: str = field(default=LOGICAL, init=False)

    @property
    def gone_at(self) -> str | None:
        return self.pruned_at

    @property
    def row_total(self) -> int:
        return sum(self.row_counts.values())

    @property
    def is_full(self) -> bool:
        """A whole-database backup with data, taken of the configured database itself."""
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


@dataclass(frozen=True, kw_only=True)
class PhysicalBackupRecord(Backup):
    """A physical backup (pgBackRest), as `pgbackrest info` reported it after it succeeded. Never a
    logical "full backup" (`is_full` is False): latest, retention and logical drills do not count it."""

    stanza: str
    label: str  # pgBackRest's backup set, e.g. 20261128-020000F_20261128-030000I
    type: str  # full | diff | incr
    delta: int  # bytes this backup copied
    repo_size: int  # bytes it takes in the repository
    repo_delta: int
    wal_start: str | None
    wal_stop: str | None
    lsn_start: str | None
    lsn_stop: str | None
    prior: str | None = None  # the backup a diff or incr builds on
    started_at: str | None = None
    stopped_at: str | None = None
    checksum_errors: bool = False
    pgbackrest_version: str | None = None
    manifest_seal: dict | None = None  # signed {database, stanza, label, manifest_sha256, manifest_size}
    format: str = "physical"
    expired_at: str | None = None
    engine: str = field(default=PHYSICAL, init=False)

    @property
    def gone_at(self) -> str | None:
        return self.expired_at

    @property
    def wal_range(self) -> str:
        return f"{self.wal_start or '?'}..{self.wal_stop or '?'}"


FULL_KINDS = ("manual", "scheduled")


# ---------------------------------------------------------------- rows <-> backups, for both tables


@dataclass(frozen=True)
class Table:
    """How one catalog table's rows map to its variant: which columns hold JSON or 0/1."""

    name: str
    record: type
    gone: str  # the column set when it stops being restorable
    lists: tuple[str, ...] = ()  # JSON lists, read as tuples (NULL: empty)
    empty_dicts: tuple[str, ...] = ()  # JSON objects, NULL read as {}
    dicts: tuple[str, ...] = ()  # JSON objects, NULL read as None
    bools: tuple[str, ...] = ()


LOGICAL_TABLE = Table("backups", BackupRecord, "pruned_at",
                      lists=("tables", "not_valid_constraints", "recipients", "roles", "role_definitions"),
                      empty_dicts=("row_counts",), dicts=("objects", "globals_file", "write_counters"), bools=("schema_only",))
PHYSICAL_TABLE = Table("physical_backups", PhysicalBackupRecord, "expired_at", dicts=("manifest_seal",),
                       bools=("checksum_errors",))
TABLES = {LOGICAL: LOGICAL_TABLE, PHYSICAL: PHYSICAL_TABLE}


def from_row(table: Table, row: dict) -> Backup:
    values = dict(row)
    for name in table.lists:
        values[name] = tuple(json.loads(values.get(name) or "[]"))
    for name in table.empty_dicts:
        values[name] = json.loads(values.get(name) or "{}")
    for name in table.dicts:
        values[name] = json.loads(values[name]) if values.get(name) else None
    for name in table.bools:
        values[name] = bool(values[name])
    return table.record(**values)


def to_row(table: Table, record: Backup) -> dict:
    values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.init}
    for name in table.lists:
        values[name] = json.dumps(list(values[name] or ()))
    for name in (*table.empty_dicts, *table.dicts):
        values[name] = json.dumps(values[name]) if values[name] is not None else None
    for name in table.bools:
        values[name] = int(values[name])
    return values


def insert(store: Store, record: Backup) -> None:
    table = TABLES[record.engine]
    with store.db() as db:
        db[table.name].insert(to_row(table, record))


def select(store: Store, table: Table, where: dict | None = None, *, database: str | None = None,
           limit: int | None = None, include_gone: bool = False, kinds: tuple[str, ...] | None = None) -> list[Backup]:
    """Rows of one table, newest first; `where` is column = value."""
    clauses, params = [], []
    for column, value in (where or {}).items():
        clauses.append(f"{column} = ?")
        params.append(value)
    if database:
        clauses.append("database = ?")
        params.append(database)
    if not include_gone:
        clauses.append(f"{table.gone} IS NULL")
    if kinds:
        clauses.append(f"kind IN ({', '.join('?' for _ in kinds)})")
        params.extend(kinds)
    sql = f"SELECT * FROM {table.name}"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY created_at DESC, id DESC"
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    with store.db() as db:
        return [from_row(table, row) for row in db.query(sql, params)]


def set_verified(store: Store, engine: str, backup_id: int, status: str, at: str, restore_seconds: float | None) -> None:
    with store.db() as db:
        db.execute(f"UPDATE {TABLES[engine].name} SET verification = ?, verified_at = ?, restore_seconds = ? WHERE id = ?",
                   [status, at, restore_seconds, backup_id])


def list_catalog(store: Store, database: str | None = None, limit: int | None = None) -> list[Backup]:
    """Every restorable backup, logical and physical, newest first: the one listing `/backup list` shows."""
    both = [b for table in TABLES.values() for b in select(store, table, database=database, limit=limit)]
    both.sort(key=lambda b: (b.created_at, b.id), reverse=True)
    return both[:limit] if limit else both


def add_backup(store: Store, record: BackupRecord) -> None:
    insert(store, record)


def get_backup(store: Store, backup_id: int) -> BackupRecord | None:
    rows = select(store, LOGICAL_TABLE, {"id": backup_id}, include_gone=True)
    return rows[0] if rows else None


def list_backups(
    store: Store, database: str | None = None, limit: int | None = None, include_pruned: bool = False,
    kinds: tuple[str, ...] | None = None,
) -> list[BackupRecord]:
    """Logical backups, newest first."""
    return select(store, LOGICAL_TABLE, database=database, limit=limit, include_gone=include_pruned, kinds=kinds)


def latest_backup(store: Store, database: str, full_only: bool = False) -> BackupRecord | None:
    """The newest backup of `database`; with `full_only`, the newest full one (`BackupRecord.is_full`)."""
    for record in list_backups(store, database):
        if not full_only or record.is_full:
            return record
    return None


def set_verification(store: Store, backup_id: int, status: str, at: str, restore_seconds: float | None) -> None:
    set_verified(store, LOGICAL, backup_id, status, at, restore_seconds)


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
            " VALUES (?, 'backup', ?, ?, ?, ?, ?, ?, 1)",
            [record.id, record.database, JobStatus.SUCCEEDED, record.requested_by, record.created_at, record.created_at,
             json.dumps({"rebuilt_from": source, "kind": record.kind, "format": record.format})],
        )
    try:
        add_backup(store, record)
    except BaseException:
        with store.db() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", [record.id])
        raise
    return record
