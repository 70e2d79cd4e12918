"""Health samples (for growth trends), scheduled runs, and alert on/off state (for once-per-breach alerts)."""

from __future__ import annotations

import json

from state.statuses import JobStatus
from state.store import Store


def add_sample(store: Store, database: str, taken_at: str, status: str, size_bytes: int | None, detail: dict) -> None:
    with store.db() as db:
        db.execute(
            "INSERT INTO health_samples (database, taken_at, status, size_bytes, detail) VALUES (?, ?, ?, ?, ?)",
            [database, taken_at, status, size_bytes, json.dumps(detail)],
        )


def previous_size(store: Store, database: str, before: str) -> tuple[str, int] | None:
    """The newest size sample strictly before `before`: (taken_at, bytes)."""
    return _newest_size(store, database, "<", before)


def size_at_or_before(store: Store, database: str, moment: str) -> int | None:
    found = _newest_size(store, database, "<=", moment)
    return found[1] if found else None


def _newest_size(store: Store, database: str, comparison: str, moment: str) -> tuple[str, int] | None:
    if comparison not in ("<", "<="):  # one of two fixed operators, never text from outside
        raise ValueError(f"unexpected comparison {comparison!r}")
    with store.db() as db:
        row = db.execute(
            f"SELECT taken_at, size_bytes FROM health_samples WHERE database = ? AND taken_at {comparison} ? "
            "AND size_bytes IS NOT NULL ORDER BY taken_at DESC LIMIT 1",
            [database, moment],
        ).fetchone()
    return (row[0], row[1]) if row else None


def start_run(store: Store, job: str, database: str | None, at: str) -> int:
    with store.db() as db:
        return db.execute(
            "INSERT INTO schedule_runs (job, database, started_at, status) VALUES (?, ?, ?, ?)",
            [job, database, at, JobStatus.RUNNING]
        ).lastrowid


def finish_run(store: Store, run_id: int, at: str, status: str, detail: str | None = None) -> None:
    with store.db() as db:
        db.execute("UPDATE schedule_runs SET finished_at = ?, status = ?, detail = ? WHERE id = ?", [at, status, detail, run_id])


def runs(store: Store, job: str | None = None, database: str | None = None, since: str | None = None) -> list[dict]:
    clauses, params = [], []
    for column, value in (("job", job), ("database", database)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since:
        clauses.append("started_at >= ?")
        params.append(since)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    with store.db() as db:
        return list(db.query(f"SELECT * FROM schedule_runs{where} ORDER BY id", params))


def set_alert(store: Store, key: str, firing: bool, at: str) -> bool:
    """Record the alert's state; True when it changed (so the caller posts once per breach and recovery)."""
    with store.immediate() as db:
        row = db.execute("SELECT firing FROM alert_state WHERE key = ?", [key]).fetchone()
        if row is not None and bool(row[0]) == firing:
            return False
        if row is None and not firing:
            db.execute("INSERT INTO alert_state (key, firing, since) VALUES (?, 0, ?)", [key, at])
            return False
        db.execute(
            "INSERT INTO alert_state (key, firing, since) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET firing = excluded.firing, since = excluded.since",
            [key, int(firing), at],
        )
        return True


def firing_keys(store: Store, prefix: str) -> list[str]:
    """The alerts firing now whose key starts with `prefix` (a literal, not a pattern)."""
    with store.db() as db:
        rows = db.execute("SELECT key FROM alert_state WHERE firing = 1 AND substr(key, 1, ?) = ? ORDER BY key",
                          [len(prefix), prefix]).fetchall()
    return [r[0] for r in rows]
