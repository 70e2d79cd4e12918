"""Point-in-time copies (restored clusters left running) in state: recorded when verified, dropped once.

The rows are never deleted, so `/restore drop-copy` can say a copy was already dropped, and when.
"""

from __future__ import annotations

from dataclasses import dataclass

from state.store import Store


@dataclass(frozen=True)
class RestoredClusterRow:
    request_id: int
    database: str
    datadir: str
    port: int
    requested_by: str | None
    started_at: str
    dropped_at: str | None = None
    dropped_by: str | None = None
    drop_reason: str | None = None


def add_restored_cluster(store: Store, row: RestoredClusterRow) -> None:
    with store.db() as db:
        db["restored_clusters"].insert(row.__dict__)


def get_restored_cluster(store: Store, request_id: int) -> RestoredClusterRow | None:
    with store.db() as db:
        rows = list(db.query("SELECT * FROM restored_clusters WHERE request_id = ?", [request_id]))
    return RestoredClusterRow(**rows[0]) if rows else None


def live_restored_clusters(store: Store, database: str | None = None) -> list[RestoredClusterRow]:
    """Copies not dropped yet, oldest first."""
    sql = "SELECT * FROM restored_clusters WHERE dropped_at IS NULL" + (" AND database = ?" if database else "")
    with store.db() as db:
        rows = list(db.query(sql + " ORDER BY request_id", [database] if database else []))
    return [RestoredClusterRow(**r) for r in rows]


def mark_dropped(store: Store, request_id: int, at: str, by: str, reason: str) -> bool:
    """Set dropped_at once; False when the copy was already dropped (by someone else, or the sweep)."""
    with store.immediate() as db:
        cursor = db.execute("UPDATE restored_clusters SET dropped_at = ?, dropped_by = ?, drop_reason = ? "
                            "WHERE request_id = ? AND dropped_at IS NULL", [at, by, reason, request_id])
        return cursor.rowcount == 1
