"""Restore requests and their votes.

Every status change is a single conditional UPDATE (`... WHERE status = ?` the status it moves from)
inside one write transaction, so two approvals arriving together can start at most one restore; the
moves allowed are RequestStatus's, in state/statuses.py, and an illegal one raises IllegalTransition.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass

from state.statuses import RequestStatus, require_move
from state.store import Store, utcnow_iso

PENDING, RUNNING, SUCCEEDED, FAILED = RequestStatus.PENDING, RequestStatus.RUNNING, RequestStatus.SUCCEEDED, RequestStatus.FAILED
REJECTED, EXPIRED, CANCELLED, INTERRUPTED = (RequestStatus.REJECTED, RequestStatus.EXPIRED, RequestStatus.CANCELLED,
                                             RequestStatus.INTERRUPTED)


@dataclass(frozen=True)
class RestoreRequestRow:
    id: int
    plan: dict
    plan_hash: str
    database: str
    requester: str
    channel: str | None
    message_id: str | None
    status: str
    needs_approval: bool
    required_approvals: int
    created_at: str
    expires_at: str
    decided_at: str | None
    job_id: int | None
    result: dict
    created_dbname: str | None = None  # the database the restore creates (m011); None: it replaces or makes a cluster
    backup_size: int | None = None  # the restored backup's stored size, for the expected duration


def _row(row: dict) -> RestoreRequestRow:
    values = dict(row)
    values["plan"] = json.loads(values["plan"])
    values["result"] = json.loads(values["result"] or "{}")
    values["needs_approval"] = bool(values["needs_approval"])
    return RestoreRequestRow(**values)


def plan_hash(plan: dict) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def create_request(store: Store, plan: dict, database: str, requester: str, channel: str | None, needs_approval: bool,
                   required_approvals: int, created_at: str, expires_at: str, status: str = PENDING,
                   created_dbname: str | None = None, backup_size: int | None = None) -> RestoreRequestRow:
    """Store a request; `plan` is opaque here (the restore domain's JSON), so the columns state/ queries
    (`created_dbname`, `backup_size`) are passed in typed by the caller, who reads its own plan."""
    with store.db() as db:
        cursor = db.execute(
            "INSERT INTO restore_requests (plan, plan_hash, database, requester, channel, status, needs_approval,"
            " required_approvals, created_at, expires_at, created_dbname, backup_size)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [json.dumps(plan, sort_keys=True), plan_hash(plan), database, requester, channel, status,
             int(needs_approval), required_approvals, created_at, expires_at, created_dbname, backup_size],
        )
        request_id = cursor.lastrowid
    return get_request(store, request_id)


def set_message(store: Store, request_id: int, message_id: str | None) -> None:
    with store.db() as db:
        db.execute("UPDATE restore_requests SET message_id = ? WHERE id = ?", [message_id, request_id])


def get_request(store: Store, request_id: int) -> RestoreRequestRow | None:
    with store.db() as db:
        rows = list(db.query("SELECT * FROM restore_requests WHERE id = ?", [request_id]))
    return _row(rows[0]) if rows else None


def request_for_message(store: Store, channel: str, message_id: str) -> RestoreRequestRow | None:
    """The request posted as `message_id` in `channel`: a message id alone is not trusted to name one
    (ids from different adapters or console sessions could meet), so the request's channel must match too."""
    with store.db() as db:
        rows = list(db.query("SELECT * FROM restore_requests WHERE channel = ? AND message_id = ? ORDER BY id DESC",
                             [channel, message_id]))
    return _row(rows[0]) if rows else None


def transition(store: Store, request_id: int, from_status: RequestStatus, to_status: RequestStatus,
               at: str | None = None, result: dict | None = None) -> bool:
    """Move the request only if it is still in `from_status`; True for the one caller that did.
    A move the lifecycle never allows (expired to running) raises IllegalTransition."""
    require_move(f"restore request #{request_id}", from_status, RequestStatus(to_status))
    with store.immediate() as db:
        cursor = db.execute(
            "UPDATE restore_requests SET status = ?, decided_at = COALESCE(?, decided_at),"
            " result = COALESCE(?, result) WHERE id = ? AND status = ?",
            [to_status, at or utcnow_iso(), json.dumps(result) if result is not None else None, request_id, from_status],
        )
        return cursor.rowcount == 1


def finish_request(store: Store, request_id: int, status: RequestStatus, result: dict, job_id: int | None = None) -> None:
    """The running request's verdict and result; a request not running (already finished, interrupted
    by a restart, never started) raises IllegalTransition and keeps what it has."""
    status = RequestStatus(status)
    with store.immediate() as db:
        rows = list(db.query("SELECT status FROM restore_requests WHERE id = ?", [request_id]))
        require_move(f"restore request #{request_id}", rows[0]["status"] if rows else "missing", status)
        db.execute("UPDATE restore_requests SET status = ?, result = ?, job_id = COALESCE(?, job_id)"
                   " WHERE id = ? AND status = ?", [status, json.dumps(result), job_id, request_id, RUNNING])


def set_job(store: Store, request_id: int, job_id: int) -> None:
    with store.db() as db:
        db.execute("UPDATE restore_requests SET job_id = ? WHERE id = ?", [job_id, request_id])


def cast_vote(store: Store, request_id: int, user: str, vote: str, active: bool, at: str) -> list[str]:
    """Record or withdraw a vote while the request is pending; return the active voters for `vote`."""
    with store.immediate() as db:
        status = db.execute("SELECT status FROM restore_requests WHERE id = ?", [request_id]).fetchone()[0]
        if status == PENDING:
            db.execute(
                "INSERT INTO restore_votes (request_id, user, vote, active, at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (request_id, user, vote) DO UPDATE SET active = excluded.active, at = excluded.at",
                [request_id, user, vote, int(active), at],
            )
        return [r[0] for r in db.execute(
            "SELECT user FROM restore_votes WHERE request_id = ? AND vote = ? AND active = 1 ORDER BY at", [request_id, vote]
        ).fetchall()]


def active_voters(store: Store, request_id: int, vote: str) -> list[str]:
    with store.db() as db:
        return [r[0] for r in db.execute(
            "SELECT user FROM restore_votes WHERE request_id = ? AND vote = ? AND active = 1 ORDER BY at", [request_id, vote]
        ).fetchall()]


def first_notice(store: Store, request_id: int, user: str, reason: str) -> bool:
    """True the first time `user` is told `reason` about this request, so the thread says it once."""
    with store.db() as db:
        try:
            db.execute("INSERT INTO restore_notices (request_id, user, reason) VALUES (?, ?, ?)", [request_id, user, reason])
        except sqlite3.IntegrityError:
            return False
    return True


def due_to_expire(store: Store, now_iso: str) -> list[RestoreRequestRow]:
    with store.db() as db:
        rows = list(db.query("SELECT * FROM restore_requests WHERE status = ? AND expires_at <= ?", [PENDING, now_iso]))
    return [_row(r) for r in rows]


def mark_interrupted_requests(store: Store) -> list[RestoreRequestRow]:
    with store.immediate() as db:
        rows = list(db.query("SELECT * FROM restore_requests WHERE status = ?", [RUNNING]))
        db.execute("UPDATE restore_requests SET status = ? WHERE status = ?", [INTERRUPTED, RUNNING])
    return [_row(r) for r in rows]


def past_restore_seconds(store: Store, database: str, limit: int = 5) -> list[tuple[float, int]]:
    """(seconds, artifact size) of recent successful restores of `database`."""
    with store.db() as db:
        rows = db.execute(
            "SELECT result, backup_size FROM restore_requests WHERE database = ? AND status = ? ORDER BY id DESC LIMIT ?",
            [database, SUCCEEDED, limit]).fetchall()
    out = []
    for result, size in rows:
        seconds = json.loads(result or "{}").get("restore_seconds")
        if seconds:
            out.append((seconds, size or 0))
    return out


def kept_database_restores(store: Store, database: str | None = None) -> list[RestoreRequestRow]:
    """Restore requests whose swap kept the replaced database under a backupbot_prev_* name (its
    result's `previous_database`; a failed undo keeps it too), newest first."""
    sql = ("SELECT * FROM restore_requests WHERE json_extract(result, '$.previous_database') IS NOT NULL"
           + (" AND database = ?" if database else "") + " ORDER BY id DESC")
    with store.db() as db:
        rows = list(db.query(sql, [database] if database else []))
    return [_row(r) for r in rows]


def new_database_restores(store: Store, database: str | None = None) -> list[RestoreRequestRow]:
    """Succeeded restore requests that created their target database (copies of `database`'s data), newest first."""
    sql = ("SELECT * FROM restore_requests WHERE status = ? AND created_dbname IS NOT NULL"
           + (" AND database = ?" if database else "") + " ORDER BY id DESC")
    with store.db() as db:
        rows = list(db.query(sql, [SUCCEEDED] + ([database] if database else [])))
    return [_row(r) for r in rows]
