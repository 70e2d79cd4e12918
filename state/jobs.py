"""Jobs: one row per backup, restore or drill run, with a truthful status.

A partial unique index allows one `running` job per database, so claiming a database is a
single INSERT that either wins or names the job that holds it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from state.statuses import JobStatus, require_move
from state.store import Store, utcnow_iso

RUNNING, SUCCEEDED, FAILED, INTERRUPTED = JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.INTERRUPTED


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    database: str
    status: str
    requested_by: str | None
    channel: str | None
    message_id: str | None
    response_url: str | None
    started_at: str
    finished_at: str | None
    error: str | None
    detail: dict


def _job(row: dict) -> Job:
    return Job(
        id=row["id"], kind=row["kind"], database=row["database"], status=row["status"],
        requested_by=row["requested_by"], channel=row["channel"], message_id=row["message_id"],
        response_url=row["response_url"], started_at=row["started_at"], finished_at=row["finished_at"],
        error=row["error"], detail=json.loads(row["detail"] or "{}"),
    )


class DatabaseBusy(Exception):
    """Raised by claim_database when another job is running on the database."""

    def __init__(self, job: Job):
        super().__init__(f"{job.kind} #{job.id} is running on {job.database}")
        self.job = job


def claim_database(
    store: Store, kind: str, database: str, requested_by: str | None, channel: str | None = None,
    response_url: str | None = None, detail: dict | None = None,
) -> Job:
    """Insert a running job, or raise DatabaseBusy naming the job that holds the database."""
    with store.immediate() as db:
        try:
            cursor = db.execute(
                "INSERT INTO jobs (kind, database, status, requested_by, channel, response_url, started_at, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [kind, database, RUNNING, requested_by, channel, response_url, utcnow_iso(), json.dumps(detail or {})],
            )
        except sqlite3.IntegrityError:
            row = next(db.query("SELECT * FROM jobs WHERE database = ? AND status = ?", [database, RUNNING]))
            raise DatabaseBusy(_job(row)) from None
        job_id = cursor.lastrowid
    return get_job(store, job_id)


def start_job(store: Store, kind: str, database: str, requested_by: str | None, channel: str | None = None,
              detail: dict | None = None) -> Job:
    """A running job that holds no claim on its database (a restore's safety snapshot)."""
    with store.db() as db:
        cursor = db.execute(
            "INSERT INTO jobs (kind, database, status, requested_by, channel, started_at, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [kind, database, RUNNING, requested_by, channel, utcnow_iso(), json.dumps(detail or {})],
        )
        job_id = cursor.lastrowid
    return get_job(store, job_id)


def get_job(store: Store, job_id: int) -> Job | None:
    with store.db() as db:
        rows = list(db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
    return _job(rows[0]) if rows else None


def set_job_message(store: Store, job_id: int, channel: str | None, message_id: str | None) -> None:
    with store.db() as db:
        db.execute("UPDATE jobs SET channel = ?, message_id = ? WHERE id = ?", [channel, message_id, job_id])


def update_job_detail(store: Store, job_id: int, **values) -> None:
    with store.immediate() as db:
        row = next(db.query("SELECT detail FROM jobs WHERE id = ?", [job_id]))
        detail = json.loads(row["detail"] or "{}")
        detail.update(values)
        db.execute("UPDATE jobs SET detail = ? WHERE id = ?", [json.dumps(detail), job_id])


def finish_job(store: Store, job_id: int, status: JobStatus, error: str | None = None) -> None:
    """Move a running job to its final status; a second verdict raises IllegalTransition, so the
    first one stands and the caller that tried to change it hears why."""
    status = JobStatus(status)
    with store.immediate() as db:
        rows = list(db.query("SELECT status FROM jobs WHERE id = ?", [job_id]))
        require_move(f"job #{job_id}", rows[0]["status"] if rows else "missing", status)
        db.execute("UPDATE jobs SET status = ?, error = ?, finished_at = ? WHERE id = ? AND status = ?",
                   [status, error, utcnow_iso(), job_id, RUNNING])


def mark_interrupted_jobs(store: Store) -> list[Job]:
    """At start-up, every job still `running` died with the previous process."""
    with store.immediate() as db:
        rows = list(db.query("SELECT * FROM jobs WHERE status = ?", [RUNNING]))
        db.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, "
            "error = 'the bot stopped while this job was running' WHERE status = ?",
            [INTERRUPTED, utcnow_iso(), RUNNING],
        )
    return [_job(dict(row, status=INTERRUPTED)) for row in rows]


def recent_jobs(store: Store, database: str | None = None, limit: int = 20) -> list[Job]:
    sql = "SELECT * FROM jobs"
    params: list = []
    if database:
        sql += " WHERE database = ?"
        params.append(database)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    with store.db() as db:
        return [_job(row) for row in db.query(sql, params)]
