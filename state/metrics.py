"""Read-only queries behind /metrics: what an outside monitor needs to see, straight from the state database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from state.statuses import JobStatus, RequestStatus, Verification
from state.store import Store

FULL_KINDS = ("manual", "scheduled")  # what `latest` and the RPO count as a backup of a database


@dataclass(frozen=True)
class LastBackup:
    database: str
    backup_id: int
    created_at: datetime
    size: int
    duration_s: float | None


@dataclass(frozen=True)
class LastDrill:
    database: str
    backup_id: int
    verified_at: datetime
    restore_seconds: float | None


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def last_full_backups(store: Store) -> list[LastBackup]:
    """Per database, the newest full, unpruned backup (manual or scheduled, every table, with data)."""
    marks = ", ".join("?" for _ in FULL_KINDS)
    sql = (f"SELECT id, database, created_at, size, duration_s FROM backups WHERE pruned_at IS NULL AND schema_only = 0"
           f" AND (tables IS NULL OR tables IN ('', '[]')) AND kind IN ({marks}) ORDER BY created_at DESC, id DESC")
    found: dict[str, LastBackup] = {}
    with store.db() as db:
        for row in db.query(sql, list(FULL_KINDS)):
            if row["database"] not in found:
                found[row["database"]] = LastBackup(row["database"], row["id"], _when(row["created_at"]), row["size"],
                                                    row["duration_s"])
    return sorted(found.values(), key=lambda b: b.database)


def last_verified_drills(store: Store) -> list[LastDrill]:
    """Per database, the most recently verified backup and the restore time its drill measured (the RTO)."""
    sql = ("SELECT id, database, verified_at, restore_seconds FROM backups WHERE verification = ?"
           " AND verified_at IS NOT NULL ORDER BY verified_at DESC, id DESC")
    found: dict[str, LastDrill] = {}
    with store.db() as db:
        for row in db.query(sql, [Verification.VERIFIED]):
            if row["database"] not in found:
                found[row["database"]] = LastDrill(row["database"], row["id"], _when(row["verified_at"]),
                                                   row["restore_seconds"])
    return sorted(found.values(), key=lambda d: d.database)


def failures_by_kind(store: Store) -> dict[str, int]:
    """Failed jobs by kind (backup, restore, drill, …) plus failed scheduled runs by their job kind."""
    counts: dict[str, int] = {}
    with store.db() as db:
        for row in db.query("SELECT kind, COUNT(*) AS n FROM jobs WHERE status = ? GROUP BY kind", [JobStatus.FAILED]):
            counts[row["kind"]] = counts.get(row["kind"], 0) + row["n"]
        for row in db.query("SELECT job, COUNT(*) AS n FROM schedule_runs WHERE status = ? GROUP BY job",
                            [JobStatus.FAILED]):
            kind = "scheduled " + row["job"].split()[0]
            counts[kind] = counts.get(kind, 0) + row["n"]
    return counts


def pending_approvals(store: Store) -> int:
    with store.db() as db:
        return next(db.query("SELECT COUNT(*) AS n FROM restore_requests WHERE status = ?", [RequestStatus.PENDING]))["n"]


def running_jobs(store: Store) -> dict[str, int]:
    """Jobs that are running now, by kind."""
    with store.db() as db:
        return {row["kind"]: row["n"]
                for row in db.query("SELECT kind, COUNT(*) AS n FROM jobs WHERE status = ? GROUP BY kind",
                                  [JobStatus.RUNNING])}


def failures_by_database_and_kind(store: Store) -> dict[tuple[str, str], int]:
    """Failed jobs by (database, kind), plus failed scheduled runs as (database, "scheduled <job kind>");
    a run with no database (the digest) counts under database ""."""
    counts: dict[tuple[str, str], int] = {}
    with store.db() as db:
        for row in db.query("SELECT database, kind, COUNT(*) AS n FROM jobs WHERE status = ? GROUP BY database, kind",
                            [JobStatus.FAILED]):
            key = (row["database"], row["kind"])
            counts[key] = counts.get(key, 0) + row["n"]
        for row in db.query("SELECT database, job, COUNT(*) AS n FROM schedule_runs WHERE status = ?"
                            " GROUP BY database, job", [JobStatus.FAILED]):
            key = (row["database"] or "", "scheduled " + row["job"].split()[0])
            counts[key] = counts.get(key, 0) + row["n"]
    return counts


def last_schedule_successes(store: Store) -> dict[str, datetime]:
    """Per schedule (its name, like "backup main"), when its newest succeeded run finished."""
    sql = ("SELECT job, MAX(COALESCE(finished_at, started_at)) AS at FROM schedule_runs WHERE status = ?"
           " GROUP BY job")
    with store.db() as db:
        return {row["job"]: _when(row["at"]) for row in db.query(sql, [JobStatus.SUCCEEDED])}


def newest_physical_backups(store: Store) -> dict[str, datetime]:
    """Per database, when its newest pgBackRest backup that has not expired was catalogued."""
    sql = ("SELECT database, MAX(created_at) AS at FROM physical_backups"
           " WHERE expired_at IS NULL GROUP BY database")
    with store.db() as db:
        return {row["database"]: _when(row["at"]) for row in db.query(sql)}
