"""/backup: parse, plan, run pg_dump into storage, catalogue, report.

A backup becomes a catalog row only after the artifact and its manifest are stored under their
final names; until then it is a job, and a failed job leaves nothing listable behind.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime

import psycopg

from commands.backup.holds import ceiling_lines
from commands.backup.manifest import manifest_bytes
from commands.backup.physical import physical_list_line
from commands.backup.state_copy import after_job as copy_state_after_job
from commands.backup.status import BackupJobStatus
from commands.chat.access import ANYONE, OPERATOR
from commands.chat.args import int_in_range, parse_args
from commands.chat.context import Actor, Services
from commands.chat.help import HelpRequest, execute_help
from commands.chat.reply import Notice, Reply
from commands.chat.run import Run
from commands.errors import BackupbotError, UsageError
from commands.health.command import copies_lines, production_copies
from commands.incident.alarms import raise_alarm
from commands.incident.audit import record_event
from commands.pg import snapshot as pg_snapshot
from commands.pg.dump import FORMATS, DumpFormat, RowCounter, dump_argv, run_pg_dump
from commands.pg.globals import dump_globals, role_definitions, roles_in_database
from commands.pg.names import NameRef, parse_name_list
from commands.pg.tools import major, pg_bin_for, pg_env, tool_version
from commands.pg.waits import JobSessions
from commands.pg.write_counters import read_counters
from commands.storage.encryption import Encryptor
from commands.units import human_bytes, human_duration, human_rate
from state.backups import FULL_KINDS, PHYSICAL, Backup, BackupRecord, add_backup, list_catalog
from state.statuses import JobStatus
from state.store import iso

log = logging.getLogger(__name__)

USAGE = """Usage:
`/backup [DB] [--format custom|plain|gzip] [--tables t1,t2] [--schema-only] [--note TEXT]`
`/backup list [DB] [--limit N]`
`/backup prune [DB] [--dry-run]`  (apply retention; --dry-run shows what goes and stays)
`/backup verify BACKUP_ID|latest [DB]`  (restore drill into a scratch database)
`/backup physical [DB] [--type full|diff|incr]`  (pgBackRest backup of the cluster, when configured)
`/backup help`"""

FLAGS = {"--format": "str", "--tables": "str", "--schema-only": "bool", "--note": "rest"}
LIST_FLAGS = {"--limit": "int"}


@dataclass(frozen=True)
class BackupRequest:
    database: str
    format: str = "custom"
    tables: tuple[NameRef, ...] = ()
    schema_only: bool = False
    note: str | None = None
    kind: str = "manual"
    permission = OPERATOR


@dataclass(frozen=True)
class BackupListRequest:
    database: str | None
    limit: int = 10
    permission = ANYONE


def parse_backup(text: str, services: Services):
    """Turn `/backup` text into a typed request; raise UsageError with the usage otherwise."""
    words = text.split(None, 1)
    sub = words[0].lower() if words else ""
    rest = words[1] if len(words) > 1 else ""
    if sub in ("help", "-h", "--help"):
        return HelpRequest(USAGE)
    if sub == "list":
        args = parse_args(rest, LIST_FLAGS, USAGE)
        if len(args.words) > 1:
            raise UsageError(f"too many words: {' '.join(args.words[1:])!r}\n{USAGE}")
        database = services.settings.database(args.words[0]).name if args.words else None
        limit = int_in_range(args.flags.get("--limit", 10), "--limit", 1, 100, USAGE)
        return BackupListRequest(database=database, limit=limit)
    args = parse_args(text, FLAGS, USAGE)
    if len(args.words) > 1:
        raise UsageError(f"too many words: {' '.join(args.words[1:])!r}\n{USAGE}")
    database = services.settings.database(args.words[0] if args.words else services.settings.default_database).name
    fmt = str(args.flags.get("--format", "custom")).lower()
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (custom, plain or gzip)\n{USAGE}")
    tables = parse_tables_flag(args.flags, USAGE)
    note = args.flags.get("--note")
    if note is not None and len(note) > 500:
        raise UsageError("--note is at most 500 characters")
    return BackupRequest(database=database, format=fmt, tables=tables,
                         schema_only=bool(args.flags.get("--schema-only")), note=note)


def parse_tables_flag(flags: dict, usage: str) -> tuple[NameRef, ...]:
    """`--tables a,s.b,"Odd Name"`: the one parser of table lists, shared by /backup and /restore."""
    if "--tables" not in flags:
        return ()
    text = str(flags["--tables"]).strip()
    if not text:
        raise UsageError(f"--tables needs at least one table name\n{usage}")
    return tuple(parse_name_list(text))


# ---------------------------------------------------------------- messages


@dataclass(frozen=True, kw_only=True)
class BackupStatus(BackupJobStatus):
    """A logical backup job's message (commands.backup.status has the shape both engines share)."""

    format: str
    tables: tuple[str, ...] = ()
    schema_only: bool = False
    note: str | None = None
    raw_bytes: int = 0
    database_size: int | None = None
    record: BackupRecord | None = None

    @property
    def percent(self) -> int | None:
        if not self.database_size:
            return None
        return min(99, int(100 * self.raw_bytes / self.database_size))

    def what(self) -> str:
        what = f"{self.format}"
        if self.tables:
            what += f", tables {', '.join(str(t) for t in self.tables)}"
        if self.schema_only:
            what += ", schema only"
        return what

    def note_lines(self) -> list[str]:
        return [f"Note: {self.note}"] if self.note else []

    def running_line(self) -> str:
        if not self.raw_bytes:
            return ":hourglass_flowing_sand: starting pg_dump…"
        pct = f" ({self.percent}% of {human_bytes(self.database_size)})" if self.percent is not None else ""
        return (f":hourglass_flowing_sand: running: {human_bytes(self.raw_bytes)} dumped{pct}, "
                f"{human_rate(self.raw_bytes, self.elapsed)}, {human_duration(self.elapsed)}")

    def result_lines(self) -> list[str]:
        r = self.record
        ratio = r.raw_size / r.size if r.size else 0
        return [
            f":white_check_mark: Backup #{r.id} of {r.database} succeeded",
            f"Format: {r.format} ({_compression(r.compression)}) · Size: {human_bytes(r.size)} "
            f"(ratio {ratio:.1f}x of {human_bytes(r.raw_size)})",
            f"Duration: {human_duration(r.duration_s)} · Throughput: {human_rate(r.raw_size, r.duration_s or 0)}",
            f"sha256: {r.sha256[:12]}"
            + (f" · encrypted with age to {len(r.recipients)} recipient(s)" if r.encryption else ""),
            f"Location: {r.storage_url.rstrip('/')}/{r.key}",
            f"pg_dump {r.pg_dump_version} · server {r.server_version}",
            f"Tables: {len(r.row_counts)} · Rows: {r.row_total:,}",
        ]


def _compression(name: str) -> str:
    return "uncompressed" if name == "none" else f"{name} compression"


@dataclass(frozen=True)
class BackupList:
    """`/backup list`: logical and pgBackRest backups together, newest first (state.backups.list_catalog)."""

    database: str | None
    backups: tuple[Backup, ...]
    now: datetime

    def text(self) -> str:
        scope = self.database or "all databases"
        if not self.backups:
            command = f"/backup {self.database}" if self.database else "/backup DB"
            return (f"No backups of {scope} yet. Type `{command}` to take one now"
                    + ("" if self.database else " (`/backup` alone backs up the default database)")
                    + "; `/backup help` shows every option.")
        lines = [f"Backups of {scope} (newest first):"]
        for r in self.backups:
            age = human_duration((self.now - datetime.fromisoformat(r.created_at)).total_seconds())
            if r.engine == PHYSICAL:
                lines.append(physical_list_line(r, age))
                continue
            what = r.format + (" schema-only" if r.schema_only else "") + (f" tables {','.join(r.tables)}" if r.tables else "")
            of = r.database + (f" (database {r.dbname})" if r.dbname and r.kind == "pre-restore" else "")
            lines.append(f"#{r.id} · {of} · {r.created_at} ({age} ago) · {what} · {human_bytes(r.size)} · "
                         f"{r.kind} · {r.verification} · sha256 {r.sha256[:12]}" + (f" · {r.note}" if r.note else ""))
        return "\n".join(lines)


# ---------------------------------------------------------------- running


def artifact_key(database: str, job_id: int, created: datetime, fmt: DumpFormat) -> str:
    stamp = created.strftime("%Y%m%dT%H%M%SZ")
    return f"{database}/{created:%Y/%m}/backup-{job_id:06d}-{database}-{stamp}{fmt.extension}"


def execute_backup(services: Services, request: BackupRequest, actor: Actor, reply: Reply) -> BackupStatus:
    """Run one backup end to end; returns the final status (also posted through `reply`)."""
    dsn = services.settings.database(request.database).require_url()
    check_tables_exist(request, dsn)
    with _backup_run(services, request, actor, reply, dsn, None) as run:
        return _backup_in_run(services, request, run, dsn)


def check_tables_exist(request: BackupRequest, dsn: str) -> None:
    """`--tables nosuch` is a typo, not a failed backup: answered privately (a UsageError) before any job
    starts. A database that cannot be reached now is left to the job, which records that failure."""
    if not request.tables:
        return
    try:
        with pg_snapshot.connect(dsn) as conn:
            all_tables = pg_snapshot.read_catalog(conn).user_tables()
    except BackupbotError:
        return
    pg_snapshot.resolve_tables(all_tables, list(request.tables), f"database {request.database}")


def run_backup_job(services: Services, request: BackupRequest, actor: Actor, reply: Reply, job_id: int,
                   dsn: str) -> BackupStatus:
    """Dump, store and catalogue under job `job_id`, which the caller has already started (and holds the
    claim and slot for)."""
    with _backup_run(services, request, actor, reply, dsn, job_id) as run:
        return _backup_in_run(services, request, run, dsn)


def _backup_run(services: Services, request: BackupRequest, actor: Actor, reply: Reply, dsn: str,
                job_id: int | None) -> Run:
    return Run(services, "backup", request.database, actor, reply, event="backup", record_event=record_event,
               after_job=copy_state_after_job, detail={"format": request.format, "kind": request.kind},
               secrets=[dsn], job_id=job_id, alarm=raise_alarm)


def _backup_in_run(services: Services, request: BackupRequest, run: Run, dsn: str) -> BackupStatus:
    """The outcome is stored (the Run's verdict) before the result is published, and undelivered
    messages are retried after."""
    reply, actor, job_id = run.reply, run.actor, run.job_id
    status = BackupStatus(job_id=job_id, database=request.database,
                          user=actor.user if request.kind not in ("scheduled", "pre-restore") else None,
                          format=request.format, kind=request.kind, tables=request.tables,
                          schema_only=request.schema_only, note=request.note)
    run.started(status.headline())
    return run.posted(
        status, lambda message_id: _dump_and_store(services, request, job_id, dsn, status, reply, message_id,
                                                   watchdog=run.watchdog),
        failed=lambda error: replace(status, state=JobStatus.FAILED, error=error),
        succeeded=lambda record: (replace(status, state=JobStatus.SUCCEEDED, record=record, raw_bytes=record.raw_size,
                                          elapsed=record.duration_s or 0),
                                  {"backup_id": record.id, "kind": request.kind}))  # after: the catalog outlives the disk


def _dump_and_store(services: Services, request: BackupRequest, job_id: int, dsn: str, status: BackupStatus,
                    reply: Reply, message_id: str | None, *, watchdog) -> BackupRecord:
    fmt = FORMATS[request.format]
    created = services.clock()
    started = time.monotonic()
    secrets = services.secrets() + [dsn]
    encrypt_to = tuple(services.settings.encrypt_to)
    full = request.kind in FULL_KINDS and not request.tables and not request.schema_only
    with pg_snapshot.connect(dsn) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        server_version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        # the newest installed pg_dump that knows this server (Debian installs several side by side)
        pg_dump = pg_bin_for("pg_dump", major(server_version))
        pg_dump_version = tool_version(pg_dump)
        dbname = conn.execute("SELECT current_database()").fetchone()[0]
        database_size = pg_snapshot.database_size(conn)
        catalog = pg_snapshot.read_catalog(conn)  # every table's OID, owner, columns and parts: one query
        all_tables = catalog.user_tables()
        leaves = [name for name, kind in all_tables if kind == "r"]
        if request.tables:
            tables = pg_snapshot.resolve_tables(all_tables, list(request.tables), f"database {request.database}")
        else:
            tables = leaves
        objects = {"schemas": pg_snapshot.dumped_schemas(conn), "tables": catalog.objects}
        roles = roles_in_database(conn)  # what a restore onto a new server must create first
        definitions = role_definitions(conn, roles)
        not_valid = pg_snapshot.not_valid_constraints(conn)
        row_counter = None
        if not request.schema_only:  # rows are counted in pg_dump's own stream: the server reads each once
            wanted = set(tables)
            row_counter = RowCounter(fmt, [t for t in catalog.tables if t.kind == "r" and t.name in wanted],
                                     pg_snapshot.quoted_keywords(conn), conn.info.encoding)
        counters = read_counters(conn) | {"read_at": iso(services.clock())}  # not MVCC: read as the snapshot is
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        status = replace(status, database_size=database_size)

        sessions = JobSessions(dsn, "backup", job_id)  # the watchdog finds pg_dump's session by its name
        dog = watchdog(sessions.describe, sessions.stop)

        def progress(raw: int, elapsed: float) -> None:
            dog.moved(raw)
            if message_id:  # handed to a sender thread: no chat call in pg_dump's read loop
                getattr(reply, "progress", reply.update)(message_id, replace(status, raw_bytes=raw, elapsed=elapsed))

        key = artifact_key(request.database, job_id, created, fmt) + (".age" if encrypt_to else "")
        writer = services.storage.open_writer(key, expected_size=database_size)
        argv = dump_argv(fmt, snapshot, tables if request.tables else [], request.schema_only, binary=pg_dump)
        with dog:
            outcome = run_pg_dump(argv, sessions.env(pg_env(dsn)), fmt, writer, on_progress=progress, on_start=sessions.child,
                                  progress_every=services.progress_every, secrets=secrets, encrypt_to=encrypt_to,
                                  row_counter=row_counter)
        counts = outcome.row_counts or {}
        try:
            conn.rollback()
        except psycopg.Error:  # this session only exported the snapshot, which pg_dump imported as it began
            log.warning("backup #%s: the session that exported the snapshot was gone when the dump ended", job_id)
    globals_file = None
    if full:  # fail closed: a full backup without its roles cannot be restored onto a new server
        try:
            globals_file = store_globals(services, dsn, key, encrypt_to)
        except BaseException:
            services.storage.delete(key)
            raise
    record = BackupRecord(
        id=job_id, job_id=job_id, database=request.database, kind=request.kind, format=fmt.name,
        compression=fmt.compression, tables=tuple(t.key for t in tables) if request.tables else (),
        schema_only=request.schema_only, note=request.note, requested_by=status.user, created_at=iso(created),
        duration_s=round(time.monotonic() - started, 3), storage_url=services.storage.url, key=key,
        manifest_key=key + ".manifest.json", size=outcome.size, raw_size=outcome.raw_size, sha256=outcome.sha256,
        pg_dump_version=pg_dump_version, server_version=server_version, database_size=database_size,
        row_counts=counts, not_valid_constraints=tuple(not_valid), objects=objects, dbname=dbname,
        encryption="age" if encrypt_to else None, recipients=encrypt_to, roles=tuple(roles),
        role_definitions=tuple(definitions), globals_file=globals_file,
        signed_by=services.settings.signing.signing_key_id, write_counters=counters,
    )
    try:
        services.storage.put_bytes(record.manifest_key, manifest_bytes(record, services.settings.signing))
        add_backup(services.store, record)
    except BaseException:
        services.storage.delete(key)
        services.storage.delete(record.manifest_key)
        if globals_file:
            services.storage.delete(globals_file["key"])
        raise
    return record


def store_globals(services: Services, dsn: str, key: str, encrypt_to: tuple[str, ...]) -> dict:
    """`pg_dumpall --globals-only` stored beside the artifact `key` (age-encrypted, with role passwords,
    when encrypt_to is set; without passwords otherwise); returns its manifest entry. Raises DumpError."""
    data = dump_globals(dsn, include_passwords=bool(encrypt_to))
    if encrypt_to:
        encryptor = Encryptor(encrypt_to)
        data = encryptor.compress(data) + encryptor.flush()
    globals_key = key.removesuffix(".age") + ".globals.sql" + (".age" if encrypt_to else "")
    services.storage.put_bytes(globals_key, data)
    return {"key": globals_key, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
            "passwords": bool(encrypt_to)}


def execute_backup_list(services: Services, request: BackupListRequest, actor: Actor, reply: Reply) -> BackupList:
    backups = tuple(list_catalog(services.store, request.database, limit=request.limit))
    result = BackupList(database=request.database, backups=backups, now=services.clock())
    copies = copies_lines(production_copies(services, request.database))  # restores --into a new database
    for database in [request.database] if request.database else list(services.settings.databases):
        copies += ceiling_lines(services, database, result.now, indent="")  # legal holds, the ceiling's next
    reply.ephemeral(Notice("\n".join([result.text(), *copies])) if copies else result)
    return result


EXECUTORS = {BackupRequest: execute_backup, BackupListRequest: execute_backup_list, HelpRequest: execute_help}
