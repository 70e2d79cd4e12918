"""/db-health: one status per section, from queries that can never hang the bot.

Every connection has a connect timeout and every statement a statement_timeout, so a dead or
hung database answers "unreachable" or "timed out" within seconds.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg

from commands.chat.access import VIEWER
from commands.chat.args import parse_args
from commands.chat.context import Actor, Services
from commands.chat.reply import Reply
from commands.errors import BackupbotError, ConfigError, UsageError
from commands.incident.audit import record_event
from commands.redact import redact
from commands.units import human_bytes, human_duration
from state import health as health_state
from state.backups import list_backups
from state.store import iso

USAGE = "Usage: `/db-health [DB|all]`"
OK, WARN, CRITICAL = "ok", "warn", "critical"
RANK = {OK: 0, WARN: 1, CRITICAL: 2}
ICON = {OK: ":large_green_circle:", WARN: ":large_yellow_circle:", CRITICAL: ":red_circle:"}

DEFAULTS = {
    "connect_timeout_seconds": 5,
    "statement_timeout_ms": 5000,
    "rpo_hours": 24,
    "connections_warn_pct": 80,
    "connections_critical_pct": 95,
    "idle_in_transaction_warn_seconds": 60,
    "long_query_warn_seconds": 60,
    "long_query_critical_seconds": 600,
    "cache_hit_warn": 0.95,
    "cache_hit_critical": 0.90,
    "dead_tuple_warn_ratio": 0.2,
    "growth_warn_pct": 20,
    "drill_warn_days": 8,
}


def health_settings(services: Services) -> dict:
    table = dict(services.settings.health or {})
    unknown = sorted(set(table) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"health.{unknown[0]}: unknown key (known: {', '.join(sorted(DEFAULTS))})")
    out = dict(DEFAULTS)
    for key, value in table.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"health.{key}: expected a number >= 0, got {value!r}")
        out[key] = value
    return out


@dataclass(frozen=True)
class HealthRequest:
    databases: tuple[str, ...]
    permission = VIEWER  # shows pids, users and query shapes: operators and [access] viewers only


def parse_health(text: str, services: Services) -> HealthRequest:
    args = parse_args(text, {}, USAGE)
    if len(args.words) > 1:
        raise UsageError(f"too many words\n{USAGE}")
    if not args.words:
        return HealthRequest((services.settings.default_database,))
    if args.words[0].lower() == "all":
        return HealthRequest(tuple(services.settings.databases))
    return HealthRequest((services.settings.database(args.words[0]).name,))


@dataclass(frozen=True)
class Section:
    name: str
    status: str
    lines: tuple[str, ...]


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


def _worst(*statuses: str) -> str:
    return max(statuses, key=RANK.get, default=OK)


def check_database(services: Services, database: str) -> HealthReport:
    """Run every check against `database`; never raises for a database that is down."""
    cfg = health_settings(services)
    now = services.clock()
    taken_at = iso(now)
    sections: list[Section] = []
    size = None
    dsn = services.settings.database(database).url
    secrets = services.secrets() + ([dsn] if dsn else [])
    if not dsn:
        sections.append(Section("connection", CRITICAL, (f"no DSN: {services.settings.database(database).url_env} is not set",)))
    else:
        try:
            with psycopg.connect(
                dsn,
                connect_timeout=int(cfg["connect_timeout_seconds"]),
                autocommit=True,
                application_name="backupbot-health",
                options=f"-c statement_timeout={int(cfg['statement_timeout_ms'])} -c lock_timeout=1000",
            ) as conn:
                size = _run_sections(conn, services, database, cfg, now, sections, secrets)
        except psycopg.OperationalError as exc:
            reason = "timed out" if "timeout" in str(exc).lower() else "unreachable"
            sections.insert(0, Section("connection", CRITICAL, (f"{reason}: {redact(str(exc).strip(), secrets)[:300]}",)))
    sections.extend(_backup_sections(services, database, cfg, now))
    sections.append(_storage_section(services))
    report = HealthReport(database, tuple(sections), taken_at, size)
    health_state.add_sample(services.store, database, taken_at, report.status, size, {s.name: s.status for s in sections})
    return report


def _query(conn, sql: str, params=None):
    return conn.execute(sql, params).fetchall()


def _run_sections(conn, services, database, cfg, now: datetime, sections: list[Section], secrets) -> int | None:
    size = None

    def guarded(name: str, fn) -> None:
        try:
            sections.append(fn())
        except psycopg.errors.QueryCanceled:
            sections.append(Section(name, WARN, (f"timed out after {cfg['statement_timeout_ms']} ms",)))
        except psycopg.Error as exc:
            sections.append(Section(name, WARN, (redact(str(exc).strip(), secrets)[:200],)))

    def size_section() -> Section:
        nonlocal size
        size = _query(conn, "SELECT pg_database_size(current_database())")[0][0]
        previous = health_state.previous_size(services.store, database, iso(now))
        if not previous:
            return Section("size", OK, (f"{human_bytes(size)} (first sample)",))
        at, before = previous
        growth = (size - before) / before * 100 if before else 0
        status = WARN if growth > cfg["growth_warn_pct"] else OK
        return Section("size", status, (f"{human_bytes(size)}, {growth:+.1f}% since {at}",))

    def connections_section() -> Section:
        rows = _query(conn, "SELECT coalesce(state, 'background'), count(*) FROM pg_stat_activity GROUP BY 1 ORDER BY 2 DESC")
        total = sum(n for _, n in rows)
        limit = int(_query(conn, "SHOW max_connections")[0][0])
        pct = total / limit * 100
        status = CRITICAL if pct >= cfg["connections_critical_pct"] else WARN if pct >= cfg["connections_warn_pct"] else OK
        idle = _query(
            conn,
            "SELECT pid, usename, extract(epoch FROM now() - state_change) FROM pg_stat_activity "
            "WHERE state LIKE 'idle in transaction%' ORDER BY 3 DESC",
        )
        lines = [f"{total}/{limit} ({pct:.0f}%): " + ", ".join(f"{state} {n}" for state, n in rows)]
        old = [(pid, user, secs) for pid, user, secs in idle if secs >= cfg["idle_in_transaction_warn_seconds"]]
        if idle:
            lines.append(
                f"{len(idle)} idle in transaction"
                + (f", {len(old)} for over {cfg['idle_in_transaction_warn_seconds']}s" if old else "")
            )
            lines.extend(
                f"pid {pid} ({user}) idle in transaction for {human_duration(float(secs))}" for pid, user, secs in idle[:3]
            )
            status = _worst(status, WARN if old else OK)
        return Section("connections", status, tuple(lines))

    def queries_section() -> Section:
        rows = _query(
            conn,
            "SELECT pid, usename, extract(epoch FROM now() - query_start), query FROM pg_stat_activity "
            "WHERE state = 'active' AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND now() - query_start > make_interval(secs => %s) ORDER BY 3 DESC LIMIT 5",
            [cfg["long_query_warn_seconds"]],
        )
        if not rows:
            return Section("long queries", OK, (f"none over {cfg['long_query_warn_seconds']}s",))
        status = CRITICAL if rows[0][2] >= cfg["long_query_critical_seconds"] else WARN
        return Section(
            "long queries",
            status,
            (f"{len(rows)} over {cfg['long_query_warn_seconds']}s",)
            + tuple(
                f"pid {pid} ({user}) {human_duration(float(secs))}: {shown_query(q, 80, secrets)}"
                for pid, user, secs, q in rows
            ),
        )

    def locks_section() -> Section:
        rows = _query(
            conn,
            "SELECT pid, pg_blocking_pids(pid), extract(epoch FROM now() - query_start), query "
            "FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0 ORDER BY 3 DESC LIMIT 5",
        )
        if not rows:
            return Section("lock waits", OK, ("none",))
        return Section(
            "lock waits",
            WARN,
            (f"{len(rows)} blocked",)
            + tuple(
                f"pid {pid} waits {human_duration(float(secs or 0))} on pid {', '.join(map(str, blockers))}: "
                f"{shown_query(q, 60, secrets)}"
                for pid, blockers, secs, q in rows
            ),
        )

    def not_valid_section() -> Section:
        from commands.pg.snapshot import NOT_VALID_SQL

        rows = [r[0] for r in _query(conn, NOT_VALID_SQL)]
        return Section(
            "NOT VALID constraints", WARN if rows else OK, (f"{len(rows)}" + (f": {', '.join(rows[:5])}" if rows else ""),)
        )

    def cache_section() -> Section:
        ratio = _query(
            conn,
            "SELECT sum(blks_hit)::float / nullif(sum(blks_hit + blks_read), 0) FROM pg_stat_database "
            "WHERE datname = current_database()",
        )[0][0]
        if ratio is None:
            return Section("cache hit ratio", OK, ("no reads yet",))
        status = CRITICAL if ratio < cfg["cache_hit_critical"] else WARN if ratio < cfg["cache_hit_warn"] else OK
        return Section("cache hit ratio", status, (f"{ratio:.1%}",))

    def dead_section() -> Section:
        rows = _query(
            conn,
            "SELECT schemaname || '.' || relname, n_dead_tup, n_live_tup, last_autovacuum FROM pg_stat_user_tables "
            "ORDER BY n_dead_tup DESC LIMIT 3",
        )
        rows = [r for r in rows if r[1]]
        if not rows:
            return Section("dead tuples", OK, ("none",))
        worst = max(dead / max(live + dead, 1) for _, dead, live, _ in rows)
        status = WARN if worst > cfg["dead_tuple_warn_ratio"] else OK
        return Section(
            "dead tuples",
            status,
            tuple(
                f"{name}: {dead:,} dead / {live:,} live, last autovacuum {vac.isoformat(timespec='minutes') if vac else 'never'}"
                for name, dead, live, vac in rows
            ),
        )

    def statements_section() -> Section:
        if not _query(conn, "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"):
            return Section("slow statements", OK, ("pg_stat_statements is not installed (CREATE EXTENSION pg_stat_statements)",))
        rows = _query(
            conn, "SELECT query, calls, mean_exec_time FROM pg_stat_statements ORDER BY mean_exec_time DESC LIMIT 3"
        )
        return Section(
            "slow statements",
            OK,
            tuple(f"{mean:.1f} ms x {calls}: {shown_query(q, 70, secrets)}" for q, calls, mean in rows)
            or ("none recorded",),
        )

    for name, fn in (
        ("size", size_section),
        ("connections", connections_section),
        ("long queries", queries_section),
        ("lock waits", locks_section),
        ("NOT VALID constraints", not_valid_section),
        ("cache hit ratio", cache_section),
        ("dead tuples", dead_section),
        ("slow statements", statements_section),
    ):
        guarded(name, fn)
    return size


def _backup_sections(services: Services, database: str, cfg: Mapping, now: datetime) -> list[Section]:
    records = [r for r in list_backups(services.store, database) if r.is_full]
    if not records:
        backup = Section("last backup", CRITICAL, (f"none yet (RPO {cfg['rpo_hours']}h)",))
    else:
        age = now - datetime.fromisoformat(records[0].created_at)
        status = CRITICAL if age > timedelta(hours=cfg["rpo_hours"]) else OK
        backup = Section(
            "last backup", status, (f"#{records[0].id}, {human_duration(age.total_seconds())} ago (RPO {cfg['rpo_hours']}h)",)
        )
    verified = [r for r in records if r.verification == "verified" and r.verified_at]
    if not verified:
        drill = Section("last verified drill", WARN, ("none yet: run `/backup verify latest`",))
    else:
        last = max(verified, key=lambda r: r.verified_at)
        age = now - datetime.fromisoformat(last.verified_at)
        status = WARN if age > timedelta(days=cfg["drill_warn_days"]) else OK
        drill = Section(
            "last verified drill",
            status,
            (f"backup #{last.id}, {human_duration(age.total_seconds())} ago, RTO {human_duration(last.restore_seconds)}",),
        )
    return [backup, drill]


def _storage_section(services: Services) -> Section:
    key = f".backupbot-health-{uuid.uuid4().hex[:8]}"
    try:
        services.storage.put_bytes(key, b"probe")
        services.storage.get_bytes(key)
        services.storage.delete(key)
        return Section("storage", OK, (f"{services.storage.url} writable",))
    except BackupbotError as exc:
        return Section("storage", CRITICAL, (f"{services.storage.url}: {exc}",))


# ---------------------------------------------------------------- query text without literals


def _ident_char(c: str) -> bool:
    return c.isalnum() or c in "_$" or ord(c) >= 0x80


_NUMBER_RE = re.compile(r"0[xX][0-9A-Fa-f_]*|0[oO][0-7_]*|0[bB][01_]*|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?")
_DOLLAR_TAG_RE = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_LITERAL, _COMMENT = 1, 2


def _mask(sql: str, backslash_escapes: bool) -> bytearray:
    """Mark each character of `sql` that is inside a literal (1) or a comment (2), reading it as PostgreSQL's lexer
    does. `backslash_escapes` reads '...' as with standard_conforming_strings off. Anything unterminated runs to
    the end (a truncated or malformed query hides its tail, never shows it)."""
    n = len(sql)
    mask = bytearray(n)
    i = 0

    def mark(start: int, end: int, kind: int) -> int:
        mask[start:end] = bytes([kind]) * (end - start)
        return end

    while i < n:
        c = sql[i]
        prev = sql[i - 1] if i else " "
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = mark(i, n if end < 0 else end, _COMMENT)
        elif sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            i = mark(i, j if not depth else n, _COMMENT)
        elif c == '"':  # a quoted identifier is a name, not data: kept as written
            j = i + 1
            while j < n and not (sql[j] == '"' and not sql.startswith('""', j)):
                j += 2 if sql.startswith('""', j) else 1
            if j >= n:
                i = mark(i, n, _LITERAL)
            else:
                i = j + 1
        elif c == "'" or (not _ident_char(prev) and c in "eEbBxXnN" and sql.startswith("'", i + 1)) or (
                not _ident_char(prev) and c in "uU" and sql.startswith("&'", i + 1)):
            quote = sql.index("'", i)
            escapes = backslash_escapes or (quote == i + 1 and c in "eE")
            j = quote + 1
            while j < n:
                if escapes and sql[j] == "\\":
                    j += 2
                elif sql[j] == "'":
                    if sql.startswith("''", j):
                        j += 2
                    else:
                        break
                else:
                    j += 1
            i = mark(i, min(j + 1, n), _LITERAL)
        elif c == "$" and not _ident_char(prev) and (tag := _DOLLAR_TAG_RE.match(sql, i)):
            end = sql.find(tag.group(), tag.end())
            i = mark(i, n if end < 0 else end + len(tag.group()), _LITERAL)
        elif c == "$" and i + 1 < n and sql[i + 1].isdigit():  # a parameter ($1): kept
            i += 1
            while i < n and sql[i].isdigit():
                i += 1
        elif (c.isdigit() or (c == "." and i + 1 < n and sql[i + 1].isdigit())) and not _ident_char(prev):
            i = mark(i, _NUMBER_RE.match(sql, i).end() or i + 1, _LITERAL)
        elif _ident_char(c):
            while i < n and _ident_char(sql[i]):
                i += 1
        else:
            i += 1
    return mask


def normalize_query(sql: str | None) -> str:
    """Query text with every literal (strings, E'', B'', X'', U&'', dollar-quoted bodies, numbers) replaced by `?`
    and comments removed, on one line. Strings are read both with and without backslash escapes and a character
    is hidden if either reading puts it in a literal, so the server's standard_conforming_strings can't matter."""
    if not sql:
        return ""
    sql = sql.replace("\x00", "")
    mask = bytearray(a | b for a, b in zip(_mask(sql, False), _mask(sql, True), strict=True))
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        if not mask[i]:
            out.append(sql[i])
            i += 1
            continue
        j, literal = i, False
        while j < n and mask[j]:
            literal = literal or bool(mask[j] & _LITERAL)
            j += 1
        if literal:  # spaced only where the neighbours would otherwise run into it
            before = " " if out and _ident_char(out[-1][-1]) else ""
            after = " " if j < n and _ident_char(sql[j]) else ""
            out.append(f"{before}?{after}")
        else:
            out.append(" ")
        i = j
    return " ".join("".join(out).split())


def shown_query(sql: str | None, limit: int, secrets: list[str]) -> str:
    """How /db-health shows a query: normalized, redacted, shortened to `limit` characters."""
    text = redact(normalize_query(sql), secrets)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- copies of production data


@dataclass(frozen=True)
class ProductionCopy:
    """A database a restore request created (`--into NEW_DB`): a full copy of production data until dropped."""

    request_id: int
    database: str  # the configured database whose server holds it
    dbname: str
    created_on: str  # YYYY-MM-DD
    present: bool | None  # None: the server could not be asked

    def line(self) -> str:
        state = "still present" if self.present else "could not check whether it is still present"
        return f"{self.dbname} created by restore request #{self.request_id} on {self.created_on} — {state}"


def production_copies(services: Services, database: str | None = None) -> list[ProductionCopy]:
    """Databases created by succeeded restore requests that still exist (or whose server did not answer)."""
    from state.approvals import new_database_restores

    latest: dict[tuple[str, str], object] = {}
    for row in new_database_restores(services.store, database):
        dbname = row.plan.get("target_dbname")
        if dbname and row.database in services.settings.databases:
            latest.setdefault((row.database, dbname), row)  # newest first: a name created again counts once
    if not latest:
        return []
    cfg = health_settings(services)
    copies = []
    for db in sorted({key[0] for key in latest}):
        names = sorted(name for d, name in latest if d == db)
        dsn = services.settings.database(db).url
        present: set[str] | None = None
        if dsn:
            try:
                with psycopg.connect(dsn, connect_timeout=int(cfg["connect_timeout_seconds"]), autocommit=True,
                                     application_name="backupbot-health",
                                     options=f"-c statement_timeout={int(cfg['statement_timeout_ms'])}") as conn:
                    present = {r[0] for r in conn.execute(
                        "SELECT datname FROM pg_database WHERE datname = ANY(%s)", [names]).fetchall()}
            except psycopg.Error:
                present = None
        for name in names:
            if present is not None and name not in present:
                continue  # dropped: no longer a copy anyone has to think about
            row = latest[(db, name)]
            when = (row.decided_at or row.created_at)[:10]
            copies.append(ProductionCopy(row.id, db, name, when, True if present is not None else None))
    return sorted(copies, key=lambda c: c.request_id)


def copies_lines(copies: list[ProductionCopy], indent: str = "") -> list[str]:
    if not copies:
        return []
    return [f"{indent}Copies of production data:"] + [f"{indent}  {c.line()}" for c in copies]


def execute_health(services: Services, request: HealthRequest, actor: Actor, reply: Reply) -> HealthReports:
    reports = HealthReports(tuple(check_database(services, db) for db in request.databases))
    reply.post(reports)
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
