"""The live server's WAL archiving (pg_stat_archiver), forcing a segment out, and whether a time is reachable.

Reachability joins the two sides: the backups the repository holds and the newest point archived.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from commands.errors import ConfigError
from commands.pg.pgbackrest.backups import PhysicalBackup, info
from commands.pg.pgbackrest.config import PgBackRestConfig
from commands.pg.pgbackrest.runner import PgBackRestError
from commands.redact import redact

_WAL = re.compile(r"^[0-9A-F]{24}")


@dataclass(frozen=True)
class ArchiverStatus:
    archive_mode: str
    archive_command: str            # redacted
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime | None
    server_now: datetime

    @property
    def archiving(self) -> bool:
        return self.archive_mode in ("on", "always") and bool(self.archive_command.strip())

    @property
    def rpo_seconds(self) -> float | None:
        """Age of the last archived segment: how much is lost if the server vanished now."""
        if self.last_archived_time is None:
            return None
        return max(0.0, (self.server_now - self.last_archived_time).total_seconds())

    @property
    def failing(self) -> bool:
        """The latest archiving attempt failed (a failure newer than the last success)."""
        if self.last_failed_time is None:
            return False
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time

    def pushes_to(self, cfg: PgBackRestConfig) -> bool:
        """archive_command runs pgbackrest archive-push for cfg's stanza."""
        command = self.archive_command
        return "pgbackrest" in command and "archive-push" in command and f"--stanza={cfg.stanza}" in command.split()


_ARCHIVER_SQL = """
SELECT current_setting('archive_mode'), current_setting('archive_command'), archived_count, last_archived_wal,
       last_archived_time, failed_count, last_failed_wal, last_failed_time, now()
  FROM pg_stat_archiver
"""


def archiver_status(dsn: str, *, connect_timeout: int = 10) -> ArchiverStatus:
    """pg_stat_archiver and the archive settings of the server at `dsn`."""
    try:
        with psycopg.connect(dsn, connect_timeout=connect_timeout, autocommit=True) as conn:
            row = conn.execute(_ARCHIVER_SQL).fetchone()
    except psycopg.Error as exc:
        raise PgBackRestError(f"could not read pg_stat_archiver: {redact(str(exc).strip())}") from None
    return ArchiverStatus(row[0], redact(row[1] or ""), row[2], row[3], row[4], row[5], row[6], row[7], row[8])


def _segment(name: str | None) -> str | None:
    match = _WAL.match(name or "")
    return match.group(0) if match else None


def force_archive(dsn: str, *, timeout: float = 60) -> ArchiverStatus:
    """Commit a marker transaction, switch WAL and wait until that segment is archived. Afterwards
    everything committed before this call is in the archive, and a commit record newer than it
    exists, so recovery to any earlier time can find its stopping point."""
    try:
        with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
            with conn.transaction():
                conn.execute("SELECT pg_current_xact_id()")  # an xid, so the commit writes a timestamped record
            lsn = conn.execute("SELECT pg_switch_wal()").fetchone()[0]
            wanted = conn.execute("SELECT pg_walfile_name(%s::pg_lsn)", [str(lsn)]).fetchone()[0]
    except psycopg.Error as exc:
        raise PgBackRestError(f"could not switch WAL: {redact(str(exc).strip())}") from None
    deadline = time.monotonic() + timeout
    while True:
        status = archiver_status(dsn)
        done = _segment(status.last_archived_wal)
        if done and done >= wanted:  # fixed-width hex: timeline, then log and segment
            return status
        if not status.archiving:
            raise PgBackRestError("WAL archiving is off on this server (archive_mode/archive_command)")
        if time.monotonic() > deadline:
            failure = f"; last failure: {status.last_failed_wal} at {status.last_failed_time:%H:%M:%S}" \
                if status.failing else ""
            raise PgBackRestError(f"WAL segment {wanted} was not archived within {timeout:.0f}s{failure}")
        time.sleep(0.2)


@dataclass(frozen=True)
class Reachability:
    reachable: bool
    reason: str
    backup: PhysicalBackup | None = None       # the backup set a restore would start from
    latest: datetime | None = None             # the newest archived point
    known: bool = True                         # False: it hangs on WAL not archived yet (checked without a switch)

    def __bool__(self) -> bool:
        return self.reachable


def aware(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ConfigError("a recovery target time needs a time zone, for example 2026-11-29 14:04:00+00")
    return t


def time_reachable(cfg: PgBackRestConfig, t: datetime, dsn: str | None = None, *, switch: bool = True,
                   timeout: float = 60) -> Reachability:
    """Whether a restore can reach time `t`: at or after the end of some backup, and no later than
    the newest archived point. With `dsn` (the live server) WAL is switched first (`switch`) and
    pg_stat_archiver gives that point; without it, the newest backup's end is the only known point.
    Without `switch` (a dry run, which writes nothing to the server) a time after the last archived
    segment but not in the future is reachable only if the live segment gets archived: `known` is False."""
    t = aware(t)
    backups = [b for b in info(cfg) if not b.error]
    if not backups:
        return Reachability(False, "there is no physical backup yet")
    # info's times are whole seconds (the stop time truncated): a second of margin
    usable = [b for b in backups if b.stopped + timedelta(seconds=1) <= t]
    first = min(backups, key=lambda b: b.stopped)
    if not usable:
        return Reachability(False, f"{t.isoformat()} is before the first backup ended ({first.stopped.isoformat()})")
    chosen = max(usable, key=lambda b: b.stopped)
    if dsn is not None:
        status = force_archive(dsn, timeout=timeout) if switch else archiver_status(dsn)
        latest = status.last_archived_time
        if not switch and (latest is None or t > latest) and t <= status.server_now and status.archiving:
            shown = latest.isoformat() if latest else "nothing yet"
            return Reachability(True, f"from backup {chosen.label}, WAL {chosen.wal_start} onwards, once the WAL after "
                                f"the last archived segment (archived at {shown}) is archived: it is still in the live "
                                "server's current segment, and a dry run does not switch WAL", chosen, latest, known=False)
    else:
        latest = max(b.stopped for b in backups)
    if latest is None or t > latest:
        shown = latest.isoformat() if latest else "nothing archived"
        return Reachability(False, f"{t.isoformat()} is after the newest archived point ({shown})", chosen, latest)
    return Reachability(True, f"from backup {chosen.label}, WAL {chosen.wal_start} onwards", chosen, latest)
