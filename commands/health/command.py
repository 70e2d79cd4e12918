"""/db-health: one status per section, from queries that can never hang the bot.

Every connection has a connect timeout and every statement a statement_timeout, so a dead or
hung database answers "unreachable" or "timed out" within seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from commands.chat.access import VIEWER
from commands.chat.args import parse_args
from commands.chat.context import Actor, Services
from commands.chat.reply import Reply
from commands.errors import UsageError
from commands.health.checks import (
    CRITICAL,
    OK,
    RANK,
    WARN,
    Section,
    archiver_section,
    cache_hit_section,
    connections_section,
    dead_tuples_section,
    last_backup_section,
    last_drill_section,
    lock_waits_section,
    long_queries_section,
    not_valid_section,
    size_section,
    slow_statements_section,
    storage_section,
)
from commands.health.copies import ClusterCopy, cluster_copies
from commands.incident.audit import record_event
from commands.pg.snapshot import database_size
from commands.redact import redact
from commands.settings.health import HealthSettings
from state import health as health_state
from state.approvals import kept_database_restores, new_database_restores
from state.backups import list_backups
from state.store import iso

USAGE = ("Usage: `/db-health [DB|all] [--post]`: the report is shown only to you; "
         "`--post` (or `--channel`) posts it to the channel for everyone in it")
FLAGS = {"--post": "bool", "--channel": "bool"}
ICON = {OK: ":large_green_circle:", WARN: ":large_yellow_circle:", CRITICAL: ":red_circle:"}


@dataclass(frozen=True)
class HealthRequest:
    databases: tuple[str, ...]
    post: bool = False  # to the whole channel; by default only the person who asked sees sessions and queries
    permission = VIEWER  # shows pids, users and query shapes: operators and [access] viewers only


def parse_health(text: str, services: Services) -> HealthRequest:
    args = parse_args(text, FLAGS, USAGE)
    if len(args.words) > 1:
        raise UsageError(f"too many words\n{USAGE}")
    post = bool(args.flags.get("--post") or args.flags.get("--channel"))
    if not args.words:
        return HealthRequest((services.settings.default_database,), post)
    if args.words[0].lower() == "all":
        return HealthRequest(tuple(services.settings.databases), post)
    return HealthRequest((services.settings.database(args.words[0]).name,), post)


@dataclass(frozen=True)
class HealthReport:
    database: str
    sections: tuple[Section, ...]
    taken_at: str
    size_bytes: int | None = None

    @property
    def status(self) -> str:
        return max((s.status for s in self.sections), key=RANK.get, default=OK)

    def text(self) -> str:
        lines = [f"{ICON[self.status]} *{self.database}*: {self.status.upper()} (db-health at {self.taken_at})"]
        for section in self.sections:
            lines.append(f"{ICON[section.status]} {section.name}: " + (section.lines[0] if section.lines else ""))
            lines.extend(f"    {line}" for line in section.lines[1:])
        return "\n".join(lines)


@dataclass(frozen=True)
class HealthReports:
    reports: tuple[HealthReport, ...] = field(default_factory=tuple)

    def text(self) -> str:
        return "\n\n".join(r.text() for r in self.reports)


def check_database(services: Services, database: str) -> HealthReport:
    """Run every section against `database`; never raises for a database that is down."""
    cfg = services.settings.health
    now = services.clock()
    taken_at = iso(now)
    sections: list[Section] = []
    size = None
    config = services.settings.database(database)
    dsn = config.url
    secrets = services.secrets() + ([dsn] if dsn else [])
    if not dsn:
        sections.append(Section("connection", CRITICAL, (f"no DSN: {config.url_env} is not set",)))
    else:
        try:
            with psycopg.connect(dsn, autocommit=True, **cfg.connect_options()) as conn:
                size = _database_sections(conn, services, database, now, sections, secrets)
            archiver = _guarded(cfg, secrets, "WAL archiving", lambda: archiver_section(dsn, cfg, secrets))
            if archiver is not None:
                sections.append(archiver)
        except psycopg.OperationalError as exc:
            reason = "timed out" if "timeout" in str(exc).lower() else "unreachable"
            sections.insert(0, Section("connection", CRITICAL, (f"{reason}: {redact(str(exc).strip(), secrets)[:300]}",)))
    full = [r for r in list_backups(services.store, database) if r.is_full]
    sections += [last_backup_section(full, now, cfg), last_drill_section(full, now, cfg),
                 storage_section(services.storage)]
    report = HealthReport(database, tuple(sections), taken_at, size)
    health_state.add_sample(services.store, database, taken_at, report.status, size, {s.name: s.status for s in sections})
    return report


def _guarded(cfg: HealthSettings, secrets: list[str], name: str, section: Callable[[], Section | None]) -> Section | None:
    """One section; a query that times out or fails makes that section a warning, not the whole report."""
    try:
        return section()
    except psycopg.errors.QueryCanceled:
        return Section(name, WARN, (f"timed out after {cfg.statement_timeout_ms} ms",))
    except psycopg.Error as exc:
        return Section(name, WARN, (redact(str(exc).strip(), secrets)[:200],))


def _database_sections(conn: psycopg.Connection, services: Services, database: str, now: datetime,
                       sections: list[Section], secrets: list[str]) -> int | None:
    """The sections read from the database itself; returns its size (None when that query failed)."""
    cfg = services.settings.health
    size: list[int] = []

    def size_now() -> Section:
        size.append(database_size(conn))
        return size_section(size[0], health_state.previous_size(services.store, database, iso(now)), cfg)

    for name, section in (
        ("size", size_now),
        ("connections", lambda: connections_section(conn, cfg)),
        ("long queries", lambda: long_queries_section(conn, cfg, secrets)),
        ("lock waits", lambda: lock_waits_section(conn, secrets)),
        ("NOT VALID constraints", lambda: not_valid_section(conn)),
        ("cache hit ratio", lambda: cache_hit_section(conn, cfg)),
        ("dead tuples", lambda: dead_tuples_section(conn, cfg)),
        ("slow statements", lambda: slow_statements_section(conn, secrets)),
    ):
        sections.append(_guarded(cfg, secrets, name, section))
    return size[0] if size else None


# ---------------------------------------------------------------- copies of production data


@dataclass(frozen=True)
class ProductionCopy:
    """A database a restore request created (`--into NEW_DB`, also `--to ... --into`) or kept (the database a
    swap replaced, `backupbot_prev_*`): a full copy of production data until dropped."""

    request_id: int
    database: str  # the configured database whose data it holds
    dbname: str
    created_on: str  # YYYY-MM-DD
    present: bool | None  # None: the server could not be asked
    how: str = "created by"  # or "kept (the database it replaced) by"
    server: str | None = None  # the [targets.NAME] it is on; None: the database's own server

    def line(self) -> str:
        state = "still present" if self.present else "could not check whether it is still present"
        where = f" on target {self.server}" if self.server else ""
        return f"{self.dbname}{where} {self.how} restore request #{self.request_id} on {self.created_on} — {state}"


def production_copies(services: Services, database: str | None = None) -> list[ProductionCopy | ClusterCopy]:
    """Every copy of production data the bot made that is not dropped yet, oldest request first: the one list
    /backup list and the digest show. Each kind has its own source, and each copy a `request_id` and `line()`."""
    copies: list = new_database_copies(services, database)  # --into NEW_DB, --to ... --into, backupbot_prev_*
    copies += cluster_copies(services, database)  # point-in-time clusters left running
    return sorted(copies, key=lambda c: c.request_id)


def new_database_copies(services: Services, database: str | None = None) -> list[ProductionCopy]:
    """Databases restore requests created or kept that still exist (or whose server did not answer),
    each looked up on the server it is on (the database's own, or the [targets.NAME] of `--to`)."""
    latest: dict[tuple[str, str | None, str], tuple[object, str]] = {}
    found = [(row, row.created_dbname, "created by") for row in new_database_restores(services.store, database)]
    found += [(row, row.result.get("previous_database"), "kept (the database it replaced) by")
              for row in kept_database_restores(services.store, database)]
    for row, dbname, how in sorted(found, key=lambda f: -f[0].id):
        server = row.plan.get("server")
        if dbname and row.database in services.settings.databases and (not server or server in services.settings.targets):
            latest.setdefault((row.database, server, dbname), (row, how))  # newest first: a name again counts once
    if not latest:
        return []
    cfg = services.settings.health
    copies = []
    for db, server in sorted({key[:2] for key in latest}, key=lambda k: (k[0], k[1] or "")):
        names = sorted(name for d, s, name in latest if (d, s) == (db, server))
        dsn = services.settings.targets[server].url if server else services.settings.database(db).url
        present: set[str] | None = None
        if dsn:
            try:
                with psycopg.connect(dsn, autocommit=True, **cfg.connect_options()) as conn:
                    present = {r[0] for r in conn.execute(
                        "SELECT datname FROM pg_database WHERE datname = ANY(%s)", [names]).fetchall()}
            except psycopg.Error:
                present = None
        for name in names:
            if present is not None and name not in present:
                continue  # dropped: no longer a copy anyone has to think about
            row, how = latest[(db, server, name)]
            when = (row.decided_at or row.created_at)[:10]
            copies.append(ProductionCopy(row.id, db, name, when, True if present is not None else None, how, server))
    return sorted(copies, key=lambda c: (c.request_id, c.dbname))


def copies_lines(copies: list[ProductionCopy], indent: str = "") -> list[str]:
    if not copies:
        return []
    return [f"{indent}Copies of production data:"] + [f"{indent}  {c.line()}" for c in copies]


def execute_health(services: Services, request: HealthRequest, actor: Actor, reply: Reply) -> HealthReports:
    reports = HealthReports(tuple(check_database(services, db) for db in request.databases))
    if request.post:  # asked for: everyone in the channel sees pids, users and query shapes
        reply.post(reports)
    else:
        reply.ephemeral(reports)
    for report in reports.reports:
        record_event(
            services,
            "db_health.check",
            database=report.database,
            actor=actor,
            text=f"/db-health {report.database}: {report.status}",
            detail={"status": report.status},
        )
    return reports


EXECUTORS = {HealthRequest: execute_health}
