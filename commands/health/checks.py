"""/db-health's sections, one function each, so each can be run (and tested) alone.

A section function takes what it reads (an open connection, the catalog's records, the storage) and
the [health] thresholds, and returns a Section: a name, ok/warn/critical, and lines. Connections are
opened by the caller with `HealthSettings.connect_options()`, so every query runs under a connect
timeout and a statement_timeout.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.conninfo import make_conninfo

from commands.errors import BackupbotError
from commands.health.query_text import shown_query
from commands.pg.pgbackrest.archiver import archiver_status
from commands.pg.pgbackrest.runner import PgBackRestError
from commands.pg.snapshot import not_valid_constraints
from commands.redact import redact
from commands.settings.health import HealthSettings
from commands.units import human_bytes, human_duration
from state.backups import BackupRecord
from state.statuses import Verification

OK, WARN, CRITICAL = "ok", "warn", "critical"
RANK = {OK: 0, WARN: 1, CRITICAL: 2}


@dataclass(frozen=True)
class Section:
    name: str
    status: str
    lines: tuple[str, ...]


def worst(*statuses: str) -> str:
    return max(statuses, key=RANK.get, default=OK)


def _rows(conn: psycopg.Connection, query: str, params=None) -> list[tuple]:
    return conn.execute(query, params).fetchall()


# ---------------------------------------------------------------- in the database


def size_section(size: int, previous: tuple[str, int] | None, cfg: HealthSettings) -> Section:
    """`size` now against `previous` (when, bytes): the last sample before this one."""
    if not previous:
        return Section("size", OK, (f"{human_bytes(size)} (first sample)",))
    at, before = previous
    growth = (size - before) / before * 100 if before else 0
    status = WARN if growth > cfg.growth_warn_pct else OK
    return Section("size", status, (f"{human_bytes(size)}, {growth:+.1f}% since {at}",))


def connections_section(conn: psycopg.Connection, cfg: HealthSettings) -> Section:
    rows = _rows(conn, "SELECT coalesce(state, 'background'), count(*) FROM pg_stat_activity GROUP BY 1 ORDER BY 2 DESC")
    total = sum(n for _, n in rows)
    limit = int(_rows(conn, "SHOW max_connections")[0][0])
    pct = total / limit * 100
    status = CRITICAL if pct >= cfg.connections_critical_pct else WARN if pct >= cfg.connections_warn_pct else OK
    idle = _rows(conn, "SELECT pid, usename, extract(epoch FROM now() - state_change) FROM pg_stat_activity "
                       "WHERE state LIKE 'idle in transaction%' ORDER BY 3 DESC")
    lines = [f"{total}/{limit} ({pct:.0f}%): " + ", ".join(f"{state} {n}" for state, n in rows)]
    limit_s = cfg.idle_in_transaction_warn_seconds
    old = [(pid, user, secs) for pid, user, secs in idle if secs >= limit_s]
    if idle:
        lines.append(f"{len(idle)} idle in transaction" + (f", {len(old)} for over {limit_s}s" if old else ""))
        lines.extend(f"pid {pid} ({user}) idle in transaction for {human_duration(float(secs))}"
                     for pid, user, secs in idle[:3])
        status = worst(status, WARN if old else OK)
    return Section("connections", status, tuple(lines))


def long_queries_section(conn: psycopg.Connection, cfg: HealthSettings, secrets: Sequence[str] = ()) -> Section:
    rows = _rows(conn, "SELECT pid, usename, extract(epoch FROM now() - query_start), query FROM pg_stat_activity "
                       "WHERE state = 'active' AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
                       "AND now() - query_start > make_interval(secs => %s) ORDER BY 3 DESC LIMIT 5",
                 [cfg.long_query_warn_seconds])
    if not rows:
        return Section("long queries", OK, (f"none over {cfg.long_query_warn_seconds}s",))
    status = CRITICAL if rows[0][2] >= cfg.long_query_critical_seconds else WARN
    return Section("long queries", status, (f"{len(rows)} over {cfg.long_query_warn_seconds}s",) + tuple(
        f"pid {pid} ({user}) {human_duration(float(secs))}: {shown_query(q, 80, list(secrets))}"
        for pid, user, secs, q in rows))


def lock_waits_section(conn: psycopg.Connection, secrets: Sequence[str] = ()) -> Section:
    rows = _rows(conn, "SELECT pid, pg_blocking_pids(pid), extract(epoch FROM now() - query_start), query "
                       "FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0 ORDER BY 3 DESC LIMIT 5")
    if not rows:
        return Section("lock waits", OK, ("none",))
    return Section("lock waits", WARN, (f"{len(rows)} blocked",) + tuple(
        f"pid {pid} waits {human_duration(float(secs or 0))} on pid {', '.join(map(str, blockers))}: "
        f"{shown_query(q, 60, list(secrets))}" for pid, blockers, secs, q in rows))


def not_valid_section(conn: psycopg.Connection) -> Section:
    names = not_valid_constraints(conn)
    return Section("NOT VALID constraints", WARN if names else OK,
                   (f"{len(names)}" + (f": {', '.join(names[:5])}" if names else ""),))


def cache_hit_section(conn: psycopg.Connection, cfg: HealthSettings) -> Section:
    ratio = _rows(conn, "SELECT sum(blks_hit)::float / nullif(sum(blks_hit + blks_read), 0) FROM pg_stat_database "
                        "WHERE datname = current_database()")[0][0]
    if ratio is None:
        return Section("cache hit ratio", OK, ("no reads yet",))
    status = CRITICAL if ratio < cfg.cache_hit_critical else WARN if ratio < cfg.cache_hit_warn else OK
    return Section("cache hit ratio", status, (f"{ratio:.1%}",))


def dead_tuples_section(conn: psycopg.Connection, cfg: HealthSettings) -> Section:
    rows = _rows(conn, "SELECT schemaname || '.' || relname, n_dead_tup, n_live_tup, last_autovacuum "
                       "FROM pg_stat_user_tables ORDER BY n_dead_tup DESC LIMIT 3")
    rows = [r for r in rows if r[1]]
    if not rows:
        return Section("dead tuples", OK, ("none",))
    ratio = max(dead / max(live + dead, 1) for _, dead, live, _ in rows)
    return Section("dead tuples", WARN if ratio > cfg.dead_tuple_warn_ratio else OK, tuple(
        f"{name}: {dead:,} dead / {live:,} live, last autovacuum {vac.isoformat(timespec='minutes') if vac else 'never'}"
        for name, dead, live, vac in rows))


def slow_statements_section(conn: psycopg.Connection, secrets: Sequence[str] = ()) -> Section:
    if not _rows(conn, "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"):
        return Section("slow statements", OK,
                       ("pg_stat_statements is not installed (CREATE EXTENSION pg_stat_statements)",))
    rows = _rows(conn, "SELECT query, calls, mean_exec_time FROM pg_stat_statements ORDER BY mean_exec_time DESC LIMIT 3")
    return Section("slow statements", OK, tuple(
        f"{mean:.1f} ms x {calls}: {shown_query(q, 70, list(secrets))}" for q, calls, mean in rows) or ("none recorded",))


def archiver_section(dsn: str, cfg: HealthSettings, secrets: Sequence[str] = ()) -> Section | None:
    """WAL archiving: the age of the last archived segment (the real RPO of an archived database) and
    failures. None when the server neither archives nor ever did (nothing to say)."""
    bounded = make_conninfo(dsn, options=f"-c statement_timeout={int(cfg.statement_timeout_ms)}")
    try:
        status = archiver_status(bounded, connect_timeout=int(cfg.connect_timeout_seconds))
    except PgBackRestError as exc:
        return Section("WAL archiving", WARN, (redact(str(exc), [dsn, *secrets])[:200],))
    if not status.archiving and not status.archived_count and not status.failed_count:
        return None
    if not status.archiving:
        return Section("WAL archiving", WARN, (f"off (archive_mode={status.archive_mode}), "
                                               f"{status.archived_count:,} segments archived before",))
    rpo = timedelta(hours=cfg.rpo_hours)
    if status.rpo_seconds is None:
        status_of, lines = WARN, ["no segment archived yet"]
    else:
        age = timedelta(seconds=status.rpo_seconds)
        status_of = WARN if age > rpo else OK
        lines = [f"last archived {status.last_archived_wal}, {human_duration(status.rpo_seconds)} ago "
                 f"(RPO {human_duration(rpo.total_seconds())})"]
    if status.failed_count:
        since = f", last {status.last_failed_wal} {_ago(status.last_failed_time, status.server_now)}" \
            if status.last_failed_time else ""
        lines.append(f"{status.failed_count:,} failed attempt(s){since}")
    if status.failing:
        status_of = CRITICAL
        lines.append("archiving is failing: the newest attempt failed after the last success")
    return Section("WAL archiving", status_of, tuple(lines))


def _ago(when: datetime, now: datetime) -> str:
    return f"{human_duration(max(0.0, (now - when).total_seconds()))} ago"


# ---------------------------------------------------------------- in the catalog and the storage


def last_backup_section(records: Sequence[BackupRecord], now: datetime, cfg: HealthSettings) -> Section:
    """The newest full backup against the RPO (`records`: full backups, newest first)."""
    if not records:
        return Section("last backup", CRITICAL, (f"none yet (RPO {cfg.rpo_hours}h)",))
    age = now - datetime.fromisoformat(records[0].created_at)
    status = CRITICAL if age > timedelta(hours=cfg.rpo_hours) else OK
    return Section("last backup", status,
                   (f"#{records[0].id}, {human_duration(age.total_seconds())} ago (RPO {cfg.rpo_hours}h)",))


def last_drill_section(records: Sequence[BackupRecord], now: datetime, cfg: HealthSettings) -> Section:
    verified = [r for r in records if r.verification == Verification.VERIFIED and r.verified_at]
    if not verified:
        return Section("last verified drill", WARN, ("none yet: run `/backup verify latest`",))
    last = max(verified, key=lambda r: r.verified_at)
    age = now - datetime.fromisoformat(last.verified_at)
    status = WARN if age > timedelta(days=cfg.drill_warn_days) else OK
    return Section("last verified drill", status, (
        f"backup #{last.id}, {human_duration(age.total_seconds())} ago, RTO {human_duration(last.restore_seconds)}",))


def storage_section(storage) -> Section:
    """Write, read back and delete a probe object."""
    key = f".backupbot-health-{uuid.uuid4().hex[:8]}"
    try:
        storage.put_bytes(key, b"probe")
        storage.get_bytes(key)
        storage.delete(key)
        return Section("storage", OK, (f"{storage.url} writable",))
    except BackupbotError as exc:
        return Section("storage", CRITICAL, (f"{storage.url}: {exc}",))
