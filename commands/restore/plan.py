"""A restore plan: everything checked before anyone is asked, then frozen.

Nothing is asked of anyone until the plan is known to be possible: the backup exists, its
artifact still matches its sha256, the format supports what was asked, and the target is known.
The plan is stored with its hash and never changes; changing anything means a new request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

from commands.backup.catalog import resolve_backup
from commands.backup.manifest import check_provenance
from commands.chat.context import Actor, Services
from commands.errors import EncryptionError, UsageError
from commands.pg import snapshot as pg_snapshot
from commands.pg.globals import missing_roles
from commands.pg.names import NameRef, QualifiedName, parse_key, resolve_names
from commands.pg.restore.artifact import artifact_decompressor, verify_artifact
from commands.pg.restore.databases import database_exists
from commands.pg.roles import PlannedRole, parse_definitions, show_name
from commands.pg.tools import major, tool_version, with_dbname
from commands.redact import describe_dsn
from commands.restore.dependents import refuse_dependents
from commands.restore.discards import discard_lines
from commands.restore.needs import check_server_has_what_the_dump_needs, dump_needs
from commands.restore.pitr_plan import PointInTimeMessage
from commands.restore.plans import LogicalPlan, PointInTimePlan, plan_from_dict
from commands.restore.roles import plan_missing_roles, planned_roles, refuse_privileged, role_lines
from commands.restore.rules import (
    SIDE_DATABASE,
    check_logical_options,
    default_jobs,
    is_custom,
    restore_method,
)
from commands.restore.status import RequestMessage, request_message
from commands.storage.encryption import DecryptChain, check_identity
from commands.units import human_bytes, human_duration
from state import approvals as request_state
from state.backups import LOGICAL, BackupRecord
from state.store import iso

# custom archive versions each pg_restore major reads (K_VERS_MAX in pg_backup_archiver.h)
ARCHIVE_VERSION_MAX = {12: (1, 14), 13: (1, 14), 14: (1, 14), 15: (1, 14), 16: (1, 15), 17: (1, 16), 18: (1, 16)}


@dataclass(frozen=True)
class RestoreRequest:
    backup: str  # an id or "latest"
    database: str | None = None
    tables: tuple[NameRef, ...] = ()
    jobs: int = 0  # 0: not given, the plan picks (rules.default_jobs)
    into: str | None = None
    to: str | None = None  # a [targets.NAME] server instead of the database's own
    no_owner: bool = False
    dry_run: bool = False
    allow_privileged_roles: bool = False  # create roles with SUPERUSER, pg_execute_server_program, ... (roles.py)
    permission = "operator"


# ---------------------------------------------------------------- the plan


def find_backup(services: Services, ref: str, database: str | None) -> BackupRecord:
    """The logical backup `ref` names (commands.backup.catalog), checked restorable here."""
    if ref == "latest":
        database = database or services.settings.default_database
    return require_identity(services, resolve_backup(services.store, database, ref, kind=LOGICAL))


def require_identity(services: Services, record: BackupRecord) -> BackupRecord:
    """An encrypted backup needs storage.identity_file to hold the key of one of its recipients: said
    before anyone is asked to approve and before any job or database is created."""
    if record.encryption:
        try:
            check_identity(services.settings.identity_file, record.recipients)
        except EncryptionError as exc:
            raise EncryptionError(f"backup #{record.id} cannot be restored here: {exc}") from None
    return record


def check_archive_version(services: Services, record: BackupRecord) -> None:
    """pg_restore must know the archive's format version (a newer pg_dump writes newer archives)."""
    if not is_custom(record.format):
        return
    decompressor = artifact_decompressor(record, services.settings.identity_file)
    head = b""
    try:
        for chunk in services.storage.read_chunks(record.key, chunk_size=1 << 16):
            head += decompressor.decompress(chunk)
            if len(head) >= 8:
                break
        else:  # a small artifact: the decryptor holds its last block until the end
            head += decompressor.flush() if isinstance(decompressor, DecryptChain) else b""
    finally:
        if isinstance(decompressor, DecryptChain):
            decompressor.close()
    if not head.startswith(b"PGDMP"):
        raise UsageError(f"backup #{record.id} is not a custom-format archive")
    version = (head[5], head[6])
    supported = ARCHIVE_VERSION_MAX.get(major(tool_version("pg_restore")), (1, 99))
    if version > supported:
        raise UsageError(f"backup #{record.id} is archive version {version[0]}.{version[1]}; this pg_restore "
                         f"{tool_version('pg_restore')} reads up to {supported[0]}.{supported[1]}: install a newer pg_restore")


def resolve_restore_tables(record: BackupRecord, tables: tuple[NameRef, ...]) -> list[str]:
    """Typed names -> the keys of tables the backup holds (exact names recorded at backup time)."""
    if record.objects:
        known = [QualifiedName(t["schema"], t["name"]) for t in record.objects["tables"]]
        if record.tables:
            in_backup = set(record.tables)
            known = [name for name in known if name.key in in_backup]
    else:
        known = [parse_key(key) for key in (list(record.row_counts) or list(record.tables))]
    return [name.key for name in resolve_names(known, list(tables), f"backup #{record.id}")]


def expected_seconds(services: Services, database: str, size: int) -> float | None:
    past = request_state.past_restore_seconds(services.store, database)
    rates = sorted(seconds / max(past_size, 1) for seconds, past_size in past)
    if not rates:
        return None
    return rates[len(rates) // 2] * max(size, 1)


def build_plan(services: Services, request: RestoreRequest, actor: Actor) -> LogicalPlan:
    record = find_backup(services, request.backup, request.database)
    provenance = check_provenance(services.storage, record, keyring=services.settings.signing,
                                  encrypt_to=services.settings.encrypt_to, now=services.clock())
    database = request.database or record.database
    db_config = services.settings.database(database)
    dsn = db_config.require_url()
    check_logical_options(record.format, record.id, bool(request.tables), request.jobs, bool(record.tables),
                          request.no_owner)
    tables = resolve_restore_tables(record, request.tables) if request.tables else []
    # a whole restore recreates what lives outside schemas too: what it needs is read in the sha256 check's pass
    needs = None if tables or record.tables else dump_needs(services, record)
    if needs is None:
        verify_artifact(services.storage, record)
    check_archive_version(services, record)
    warnings: list[str] = []
    base_dbname = pg_snapshot.dbname_of(dsn)
    if request.to:
        dsn = services.settings.target(request.to).require_url()
        target_dbname = request.into or record.dbname or base_dbname
        if _same_server(dsn, [d.url for d in services.settings.databases.values() if d.url]):
            warnings.append(f":warning: target {request.to} is the same server as a backed-up (production) database")
    else:
        target_dbname = request.into or base_dbname
    target_dsn = with_dbname(dsn, target_dbname)
    server_version = check_server_versions(dsn, record)
    exists = database_exists(dsn, target_dbname)
    if tables and exists:  # what depends on them there would fail the restore after approval
        refuse_dependents(target_dsn, target_dbname, tables, record)
    planned = () if request.no_owner else roles_to_create(dsn, record)
    refuse_privileged(planned, request.allow_privileged_roles, f"backup #{record.id}",
                      f"target {request.to}" if request.to else f"{database}'s server",
                      "restore with --no-owner, which creates no roles")
    some_tables = bool(tables or record.tables)
    jobs = request.jobs or default_jobs(record.format, some_tables, os.cpu_count())
    method = restore_method(exists, jobs, some_tables)
    if method == SIDE_DATABASE:
        check_side_database_rights(dsn, target_dbname)
    if needs is not None:  # can this server take what the dump creates outside schemas?
        check_server_has_what_the_dump_needs(needs, record, dsn,
                                             f"target {request.to}" if request.to else f"{database}'s server")
    if tables:
        replaces = f"tables {', '.join(tables)} in {target_dbname} (and their indexes, constraints, triggers, sequences)"
    elif record.tables:
        replaces = f"tables {', '.join(record.tables)} in {target_dbname}"
    else:
        replaces = f"every schema the backup contains in {target_dbname}"
    return LogicalPlan(
        backup_id=record.id, backup_created_at=record.created_at, backup_database=record.database,
        backup_dbname=record.dbname, backup_kind=record.what, database=database, target_dbname=target_dbname,
        target=describe_dsn(target_dsn), target_exists=exists,
        lock_key=(f"target:{request.to}:{target_dbname}" if request.to else
                  configured_name(services, dsn, target_dbname) or f"{database}:{target_dbname}"),
        format=record.format, size=record.size, backup_tables=tuple(record.tables), tables=tuple(tables),
        jobs=jobs, method=method,
        replaces=replaces if exists else f"nothing: {target_dbname} will be created",
        safety_snapshot=exists, expected_seconds=expected_seconds(services, database, record.size),
        requested_by=actor.user, requested_at=iso(services.clock()),
        server=request.to, server_version=server_version, no_owner=request.no_owner, warnings=tuple(warnings),
        create_roles=tuple(p.definition.name for p in planned), roles=tuple(p.to_dict() for p in planned),
        allow_privileged_roles=request.allow_privileged_roles, provenance=provenance.text(),
        discards=discard_lines(services, record, target_dsn, tables) if exists else (),
    )


def roles_to_create(dsn: str, record: BackupRecord) -> tuple[PlannedRole, ...]:
    """The roles the backup's objects are owned by or granted to that this server lacks, from the
    backup's definitions (checked field by field: the store may have been forged), each flagged with
    what makes it privileged: found before anyone is asked, so a restore never fails half-way for one."""
    if not record.roles:
        return ()
    missing = missing_roles(dsn, record.roles)
    defined = {d.name: d for d in parse_definitions(record.role_definitions, f"backup #{record.id}")}
    undefined = [name for name in missing if name not in defined]
    if undefined:
        raise UsageError(f"the target server lacks role(s) {', '.join(map(show_name, undefined))} and backup #{record.id} has no "
                         "definition of them: create them first (the backup's globals file has them), or restore "
                         "with --no-owner")
    return tuple(plan_missing_roles(dsn, [defined[name] for name in missing]))


def check_side_database_rights(dsn: str, target_dbname: str) -> None:
    """A side database is created, then renamed over the target: both need rights the bot's role may lack
    (CREATEDB, and owning the target), which are known now, so a restore never fails for them after approval."""
    with pg_snapshot.connect(dsn) as conn:
        superuser, createdb, owns, tablespace, may_use = conn.execute(
            "SELECT r.rolsuper, r.rolcreatedb, pg_has_role(r.oid, d.datdba, 'USAGE'), t.spcname, "
            "t.spcname = 'pg_default' OR has_tablespace_privilege(t.oid, 'CREATE') "
            "FROM pg_roles r, pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace "
            "WHERE r.rolname = current_user AND d.datname = %s", [target_dbname]).fetchone()
    if not superuser and not (createdb and owns):
        raise UsageError(f"a whole restore over {target_dbname} restores into a side database that is then renamed "
                         f"to {target_dbname}: the bot's role needs CREATEDB and membership in {target_dbname}'s owner "
                         "(or SUPERUSER); grant them, or restore --into a new database")
    if not superuser and not may_use:
        raise UsageError(f"the side database goes into {target_dbname}'s tablespace {tablespace}, on which the bot's "
                         "role has no CREATE privilege: grant it, or restore --into a new database")


def configured_name(services: Services, dsn: str, dbname: str) -> str | None:
    """The configured database that is `dbname` on this server, so a restore into it takes its lock
    (one backup or restore per database, whichever command names it)."""
    for db in services.settings.databases.values():
        if db.url and pg_snapshot.dbname_of(db.url) == dbname and _same_server(dsn, [db.url]):
            return db.name
    return None


def _same_server(dsn: str, others: list[str]) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    def where(value: str) -> tuple[str, str]:
        params = conninfo_to_dict(value)
        return str(params.get("host") or params.get("hostaddr") or "localhost"), str(params.get("port") or "5432")

    return where(dsn) in {where(other) for other in others}


def check_server_versions(dsn: str, record: BackupRecord) -> str:
    """The receiving server must be at least the backup's major version, and this pg_restore must know it."""
    with pg_snapshot.connect(dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    if record.server_version and major(version) < major(record.server_version):
        raise UsageError(f"backup #{record.id} is of PostgreSQL {record.server_version}; the target server runs "
                         f"{version}, which cannot load it: restore onto PostgreSQL {major(record.server_version)} or newer")
    tool = tool_version("pg_restore")
    if major(tool) < major(version):
        raise UsageError(f"pg_restore {tool} is older than the target server ({version}): install the client tools "
                         f"of PostgreSQL {major(version)} or newer")
    return version




@dataclass(frozen=True)
class RestorePlanMessage(RequestMessage):
    """The channel message of one restore request: its plan, its approvals, where it stands."""

    def headline(self) -> str:
        p = self.plan
        return f"*{self.title}* by <@{p.requested_by}>: restore backup #{p.backup_id} of {p.backup_database} into {p.target}"

    def backup_line(self) -> str:
        p = self.plan
        age = ""
        if self.now:
            age = f", {human_duration((self.now - datetime.fromisoformat(p.backup_created_at)).total_seconds())} old"
        tables = f" · tables {', '.join(p.tables)}" if p.tables else ""
        jobs = f" · {p.jobs} parallel jobs" if p.jobs > 1 else ""
        source = f" (database {p.backup_dbname})" if p.backup_dbname else ""
        return (f"Backup #{p.backup_id}: {p.backup_kind} backup of {p.backup_database}{source}, "
                f"{p.backup_created_at}{age} · {human_bytes(p.size)} · {p.format}{tables}{jobs}")

    def server_lines(self) -> list[str]:
        p = self.plan
        lines = [f"Server: target {p.server} (PostgreSQL {p.server_version})"] if p.server else []
        return lines + list(p.warnings)

    def role_lines(self) -> list[str]:
        p = self.plan
        if p.create_roles and not p.roles:  # a plan stored before roles were listed with their attributes
            return [f"Creates role(s) first: {', '.join(map(show_name, p.create_roles))} (from the backup's role definitions; "
                    "they stay even if the restore fails)"]
        return role_lines(planned_roles(p.roles), p.allow_privileged_roles, "the backup's role definitions")

    def safety_snapshot_text(self) -> str:
        return ("yes (custom format, catalogued as pre-restore)" if self.plan.safety_snapshot
                else "no (the target is new)")

    def expected_text(self) -> str:
        seconds = self.plan.expected_seconds
        return human_duration(seconds) if seconds else "unknown (no past restore)"

    def text(self) -> str:
        lines = [
            self.headline(),
            self.backup_line(),
            *([self.plan.provenance] if self.plan.provenance else []),
            *self.server_lines(),
            *self.role_lines(),
            f"Replaces: {self.plan.replaces}",
            *self.plan.discards,
            f"How: {self.plan.method_text}" + (" · --no-owner: owners and privileges are not restored"
                                                if self.plan.no_owner else ""),
            f"Safety snapshot first: {self.safety_snapshot_text()}",
            f"Expected duration: {self.expected_text()}",
            self.status_line(),
            *self.steps,
        ]
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def plan_message(services: Services, row: request_state.RestoreRequestRow, **overrides):
    """The request's message, for whichever kind of plan it holds."""
    plan = plan_from_dict(row.plan)
    message_class = PointInTimeMessage if isinstance(plan, PointInTimePlan) else RestorePlanMessage
    return request_message(services, row, message_class, plan, **overrides)



