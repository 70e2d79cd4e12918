"""/backup physical: a pgBackRest backup of a database's cluster, catalogued beside the logical ones.

pgBackRest does the physical work (commands/pg/pgbackrest/); the bot claims the database, takes
a job slot, runs `pgbackrest backup --type=TYPE`, reads what it made from `pgbackrest info`, and
records it in `physical_backups` (state/physical_backups.py) under its job's id. A failed run
leaves no catalog row. pgBackRest keeps and expires physical backups itself (`repo1-retention-full`);
after each backup the rows of backups it expired get `expired_at`.
"""

from __future__ import annotations

import configparser
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from commands.backup.physical_seal import seal
from commands.backup.status import BackupJobStatus
from commands.chat.access import OPERATOR
from commands.chat.args import parse_args
from commands.chat.context import Actor, Services
from commands.chat.reply import GuardedReply, Reply
from commands.chat.run import Run
from commands.errors import BackupbotError, ConfigError, UsageError
from commands.incident.audit import record_event
from commands.pg.pgbackrest import backups as pgbackrest_backups
from commands.pg.pgbackrest.backups import BACKUP_TYPES, PhysicalBackup
from commands.pg.pgbackrest.config import PgBackRestConfig, TlsConfig, write_config
from commands.pg.pgbackrest.runner import version as pgbackrest_version
from commands.redact import redact
from commands.settings import Settings
from commands.units import human_bytes, human_duration
from state.backups import PhysicalBackupRecord
from state.physical_backups import add_physical_backup, list_physical_backups, mark_expired
from state.statuses import JobStatus
from state.store import iso

log = logging.getLogger(__name__)

USAGE = "Usage: `/backup physical [DB] [--type full|diff|incr]`  (pgBackRest backup of the cluster; default full)"
JOB_KIND = "physical backup"


# ---------------------------------------------------------------- configuration


def pgbackrest_settings(settings: Settings, database: str):
    """The database's [databases.X] pgbackrest settings, or a ConfigError that says how to add them."""
    db = settings.database(database)
    if db.pgbackrest is None:
        raise ConfigError(
            f"database {db.name} has no pgBackRest stanza configured, so it has no physical backups. Add "
            f"`pgbackrest = {{ stanza = \"...\", repo_path = \"...\", pg_path = \"...\", pg_port = 5432 }}` "
            f"(or `{{ config = \"/etc/pgbackrest/pgbackrest.conf\", stanza = \"...\" }}`) under [databases.{db.name}]")
    return db.pgbackrest


def generated_config_dir(settings: Settings, database: str) -> Path:
    """Where the bot writes a database's pgbackrest.conf (with its log, lock and spool folders)."""
    return Path(settings.state_path).expanduser().resolve().parent / "pgbackrest" / database


def engine_config(settings: Settings, database: str, *, write: bool = True) -> PgBackRestConfig:
    """The engine's PgBackRestConfig for `database`: its own config file, or one the bot (re)writes
    under generated_config_dir (with `write`). The DSN's password reaches pgBackRest only as
    PGPASSWORD; the DSN's user and socket folder are the defaults for pg_user and pg_socket_path."""
    conf = pgbackrest_settings(settings, database)
    db = settings.database(database)
    params = {}
    if db.url:
        try:
            params = conninfo_to_dict(db.url)
        except Exception:
            raise ConfigError(f"databases.{database}: the URL in {db.url_env} cannot be read as a DSN") from None
    password = params.get("password") or None
    if conf.config is not None:
        return PgBackRestConfig(stanza=conf.stanza, config_path=Path(conf.config), password=password)
    host = str(params.get("host") or "")
    socket_dir = conf.pg_socket_path or (host if host.startswith("/") else None)
    remote = conf.remote
    if remote is not None:  # the DSN's host is the database host: its socket folder is no default here
        socket_dir = conf.pg_socket_path
    cfg = PgBackRestConfig(
        stanza=conf.stanza, repo_path=Path(conf.repo_path), pg_path=Path(conf.pg_path), pg_port=conf.pg_port,
        pg_socket_path=Path(socket_dir) if socket_dir else None,
        pg_user=conf.pg_user or params.get("user") or "postgres", retention_full=conf.retention_full,
        password=password, tls=TlsConfig(
            pg_host=remote.pg_host, repo_host=remote.repo_host, ca_file=Path(remote.tls_ca_file),
            cert_file=Path(remote.tls_cert_file), key_file=Path(remote.tls_key_file), pg_host_port=remote.pg_host_port,
            pg_host_cn=remote.pg_host_cn, pg_host_config=Path(remote.pg_host_config), server_address=remote.tls_server_address,
            server_port=remote.tls_server_port) if remote else None)
    directory = generated_config_dir(settings, database)
    path = write_config(cfg, directory) if write else directory / "pgbackrest.conf"
    return cfg.with_config(path)


def retention_full(settings: Settings, database: str) -> int | None:
    """repo1-retention-full as pgBackRest reads it: from the generated config, or from the stanza's
    section or [global] of an existing config file; None when it is not set (nothing expires)."""
    conf = pgbackrest_settings(settings, database)
    if conf.config is None:
        return conf.retention_full
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(Path(conf.config).read_text())
    except (OSError, configparser.Error) as exc:
        raise ConfigError(f"cannot read {conf.config}: {type(exc).__name__}") from None
    for section in (conf.stanza, "global"):
        if parser.has_option(section, "repo1-retention-full"):
            value = parser.get(section, "repo1-retention-full").strip()
            return int(value) if value.isdigit() else None
    return None


# ---------------------------------------------------------------- the request


@dataclass(frozen=True)
class PhysicalBackupRequest:
    database: str
    type: str = "full"
    kind: str = "manual"  # manual | scheduled
    permission = OPERATOR


def parse_physical(text: str, services: Services) -> PhysicalBackupRequest:
    """`/backup physical [DB] [--type full|diff|incr]` (the text after `physical`)."""
    args = parse_args(text, {"--type": "str"}, USAGE)
    if len(args.words) > 1:
        raise UsageError(f"too many words: {' '.join(args.words[1:])!r}\n{USAGE}")
    database = services.settings.database(args.words[0] if args.words else services.settings.default_database).name
    kind = str(args.flags.get("--type", "full")).lower()
    if kind not in BACKUP_TYPES:
        raise UsageError(f"unknown backup type {kind[:20]!r} (full, diff or incr)\n{USAGE}")
    pgbackrest_settings(services.settings, database)
    return PhysicalBackupRequest(database=database, type=kind)


# ---------------------------------------------------------------- messages


@dataclass(frozen=True, kw_only=True)
class PhysicalBackupStatus(BackupJobStatus):
    """A pgBackRest backup job's message (commands.backup.status has the shape both engines share)."""

    stanza: str
    type: str
    record: PhysicalBackupRecord | None = None
    retention: int | None = None

    title = "Physical backup"
    not_stored = "Nothing was catalogued as a backup."

    def what(self) -> str:
        return f"{self.type} (pgBackRest, stanza {self.stanza})"

    def running_line(self) -> str:
        running = f" for {human_duration(self.elapsed)}" if self.elapsed >= 1 else ""
        return f":hourglass_flowing_sand: pgbackrest backup --type={self.type} running{running}…"

    def failed_line(self) -> str:
        return f":x: Physical backup #{self.job_id} of {self.database} failed: {self.error}"

    def result_lines(self) -> list[str]:
        r = self.record
        lines = [
            f":white_check_mark: Physical backup #{r.id} of {r.database} succeeded: {r.type} {r.label}",
            f"Size: {human_bytes(r.size)} (delta {human_bytes(r.delta)} copied) · in the repository: "
            f"{human_bytes(r.repo_size)} (delta {human_bytes(r.repo_delta)})",
            f"Duration: {human_duration(r.duration_s)}",
            f"WAL range: {r.wal_range} · LSN {r.lsn_start or '?'}..{r.lsn_stop or '?'}",
        ]
        if r.prior:
            lines.append(f"Builds on: {r.prior}")
        if r.checksum_errors:
            lines.append(":warning: pgBackRest found page checksum errors in this backup (see `pgbackrest info`)")
        keep = f"keeps {self.retention} full backup(s)" if self.retention else "repo1-retention-full not set"
        lines.append(f"pgBackRest {r.pgbackrest_version or '?'} · stanza {r.stanza} · retention: {keep}")
        return lines


def physical_list_line(record: PhysicalBackupRecord, age: str) -> str:
    """One `/backup list` line: id, database, time, label, type, sizes, WAL range."""
    return (f"#{record.id} · {record.database} · {record.created_at} ({age} ago) · physical {record.type} "
            f"{record.label} · {human_bytes(record.size)} (delta {human_bytes(record.delta)}) · "
            f"WAL {record.wal_range} · {record.kind} · {record.verification}")


# ---------------------------------------------------------------- running


def execute_physical_backup(services: Services, request: PhysicalBackupRequest, actor: Actor,
                            reply: Reply) -> PhysicalBackupStatus:
    """Run one physical backup end to end; returns the final status (also posted through `reply`)."""
    stanza = pgbackrest_settings(services.settings, request.database).stanza
    detail = {"kind": request.kind, "format": "physical", "type": request.type}
    with Run(services, JOB_KIND, request.database, actor, reply, event="backup", record_event=record_event,
             label="physical backup", detail={"type": request.type, "kind": request.kind, "format": "physical"}) as run:
        return _run(services, request, run, stanza, detail)


def _run(services: Services, request: PhysicalBackupRequest, run: Run, stanza: str, detail: dict) -> PhysicalBackupStatus:
    reply, actor, job_id = run.reply, run.actor, run.job_id
    status = PhysicalBackupStatus(job_id=job_id, database=request.database, stanza=stanza, type=request.type,
                                  user=actor.user if request.kind != "scheduled" else None, kind=request.kind)
    run.started(status.headline(), detail)
    return run.posted(
        status, lambda message_id: _backup_and_record(services, request, job_id, status, reply, message_id),
        failed=lambda error: replace(status, state=JobStatus.FAILED, error=error),
        succeeded=lambda made: (replace(status, state=JobStatus.SUCCEEDED, record=made[0], retention=made[1],
                                        elapsed=made[0].duration_s or 0),
                                {**detail, "physical_backup_id": made[0].id, "label": made[0].label}),
        event_detail=detail)


def _backup_and_record(services: Services, request: PhysicalBackupRequest, job_id: int, status: PhysicalBackupStatus,
                       reply: GuardedReply, message_id: str | None) -> tuple[PhysicalBackupRecord, int | None]:
    cfg = engine_config(services.settings, request.database)
    retention = retention_full(services.settings, request.database)
    version = pgbackrest_version()
    created = services.clock()
    started = time.monotonic()
    done = threading.Event()

    def ticker() -> None:  # pgbackrest prints no progress we read: the message says how long it has run
        while not done.wait(max(0.5, services.progress_every)):
            if message_id:
                reply.progress(message_id, replace(status, elapsed=time.monotonic() - started))

    thread = threading.Thread(target=ticker, name=f"physical-{job_id}", daemon=True)
    thread.start()
    try:
        made = pgbackrest_backups.backup(cfg, request.type)
    finally:
        done.set()
        thread.join()
    record = _record(job_id, request, status, made, created, round(time.monotonic() - started, 3), version)
    # sealed before it is catalogued: a set is listed as the bot's only with the manifest it signed
    record = replace(record, manifest_seal=seal(services.settings.signing, cfg, request.database, made.label))
    add_physical_backup(services.store, record)
    try:  # pgBackRest expired what its retention no longer keeps: the catalog follows
        kept = {b.label for b in pgbackrest_backups.info(cfg)}
        for label in mark_expired(services.store, request.database, kept, iso(services.clock())):
            log.info("physical backup %s of %s was expired by pgBackRest's retention", label, request.database)
    except BackupbotError as exc:
        log.warning("could not read which physical backups pgBackRest keeps: %s", exc)
    return record, retention


def _record(job_id: int, request: PhysicalBackupRequest, status: PhysicalBackupStatus, made: PhysicalBackup,
            created, duration_s: float, version: str) -> PhysicalBackupRecord:
    return PhysicalBackupRecord(
        id=job_id, job_id=job_id, database=request.database, kind=request.kind, stanza=status.stanza,
        label=made.label, type=made.type, prior=made.prior, requested_by=status.user, created_at=iso(created),
        started_at=iso(made.started) if made.started else None, stopped_at=iso(made.stopped) if made.stopped else None,
        duration_s=duration_s, size=made.size, delta=made.delta, repo_size=made.repo_size,
        repo_delta=made.repo_delta, wal_start=made.wal_start, wal_stop=made.wal_stop, lsn_start=made.lsn_start,
        lsn_stop=made.lsn_stop, checksum_errors=made.error, pgbackrest_version=version,
    )


# ---------------------------------------------------------------- retention, as pgBackRest applies it


def retention_lines(services: Services, database: str) -> list[str]:
    """What `/backup prune --dry-run` adds for a database with pgBackRest: repo1-retention-full and
    every physical backup pgBackRest keeps now (with its catalog id when the bot took it).
    Empty for a database without pgBackRest; problems become a line, never an exception."""
    conf = services.settings.database(database).pgbackrest
    if conf is None:
        return []
    try:
        keep = retention_full(services.settings, database)
        cfg = engine_config(services.settings, database)
        kept = pgbackrest_backups.info(cfg)
    except BackupbotError as exc:
        return [f"Physical backups (pgBackRest, stanza {conf.stanza}): :warning: {redact(str(exc), services.secrets())}"]
    rule = (f"repo1-retention-full = {keep}: pgBackRest keeps the newest {keep} full backup(s) and the diff/incr "
            "backups and WAL that depend on them, and expires the rest after each backup"
            if keep else "repo1-retention-full is not set: pgBackRest expires nothing")
    lines = [f"Physical backups (pgBackRest, stanza {conf.stanza}): {rule}. The bot deletes none of them."]
    ids = {r.label: r.id for r in list_physical_backups(services.store, database)}
    fulls = [b.label for b in kept if b.type == "full"]
    for b in reversed(kept):
        ours = f"#{ids[b.label]} " if b.label in ids else ""
        stopped = iso(b.stopped) if b.stopped else "?"
        why = "a full backup" if b.type == "full" else f"builds on {b.prior}"
        if keep and b.type == "full" and fulls.index(b.label) < len(fulls) - keep:
            why += " (beyond the retention: goes at the next backup)"
        lines.append(f"  keeps: {ours}{b.label} {b.type} {stopped} · {human_bytes(b.size)} · WAL {b.wal_range} — {why}")
    if not kept:
        lines.append("  no physical backup yet")
    return lines


EXECUTORS = {PhysicalBackupRequest: execute_physical_backup}
