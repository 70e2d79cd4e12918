"""Legal holds and their votes (m012). Every status change is one conditional UPDATE from the status it
leaves, checked against HoldStatus's moves, so concurrent approvals activate a hold exactly once."""

from __future__ import annotations

from dataclasses import dataclass

from state.statuses import HoldStatus, require_move
from state.store import Store


@dataclass(frozen=True)
class Hold:
    id: int
    backup_id: int
    database: str
    reason: str
    requester: str
    channel: str | None
    message_id: str | None
    status: str
    required_approvals: int
    created_at: str
    expires_at: str
    decided_at: str | None = None
    decided_by: str | None = None
    released_at: str | None = None
    released_by: str | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.status == HoldStatus.ACTIVE


def create_hold(store: Store, backup_id: int, database: str, reason: str, requester: str, channel: str | None,
                required_approvals: int, created_at: str, expires_at: str) -> Hold:
    with store.immediate() as db:
        hold_id = db.execute(
            "INSERT INTO legal_holds (backup_id, database, reason, requester, channel, status, required_approvals,"
            " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [backup_id, database, reason, requester, channel, HoldStatus.PENDING, required_approvals, created_at,
             expires_at]).lastrowid
    return get_hold(store, hold_id)


def get_hold(store: Store, hold_id: int) -> Hold | None:
    with store.db() as db:
        rows = list(db.query("SELECT * FROM legal_holds WHERE id = ?", [hold_id]))
    return Hold(**rows[0]) if rows else None


def set_message(store: Store, hold_id: int, message_id: str | None) -> None:
    with store.db() as db:
        db.execute("UPDATE legal_holds SET message_id = ? WHERE id = ?", [message_id, hold_id])


def hold_for_message(store: Store, channel: str | None, message_id: str) -> Hold | None:
    with store.db() as db:
        rows = list(db.query("SELECT * FROM legal_holds WHERE channel IS ? AND message_id = ?", [channel, message_id]))
    return Hold(**rows[0]) if rows else None


def active_holds(store: Store, database: str | None = None) -> dict[int, Hold]:
    """The active hold of each held backup (the first approved), by backup id."""
    with store.db() as db:
        rows = db.query("SELECT * FROM legal_holds WHERE status = ? AND (? IS NULL OR database = ?) ORDER BY id",
                        [HoldStatus.ACTIVE, database, database])
        held: dict[int, Hold] = {}
        for row in rows:
            held.setdefault(row["backup_id"], Hold(**row))
    return held


def due_to_expire(store: Store, now_iso: str) -> list[Hold]:
    with store.db() as db:
        rows = list(db.query("SELECT * FROM legal_holds WHERE status = ? AND expires_at <= ?", [HoldStatus.PENDING, now_iso]))
    return [Hold(**r) for r in rows]


def vote(store: Store, hold_id: int, user: str, added: bool, at: str) -> list[str]:
    """Add or withdraw `user`'s approval while the hold is pending; returns the approvers now counted."""
    with store.immediate() as db:
        status = db.execute("SELECT status FROM legal_holds WHERE id = ?", [hold_id]).fetchone()[0]
        if status == HoldStatus.PENDING:
            if added:
                db.execute("INSERT OR IGNORE INTO legal_hold_votes (hold_id, user, at) VALUES (?, ?, ?)",
                           [hold_id, user, at])
            else:
                db.execute("DELETE FROM legal_hold_votes WHERE hold_id = ? AND user = ?", [hold_id, user])
        return [r[0] for r in db.execute("SELECT user FROM legal_hold_votes WHERE hold_id = ? ORDER BY at, user",
                                         [hold_id]).fetchall()]


def transition(store: Store, hold_id: int, from_status: HoldStatus, to_status: HoldStatus, at: str,
               by: str | None = None) -> bool:
    """Move the hold from `from_status` to `to_status`; True only for the caller whose UPDATE won."""
    require_move(f"legal hold #{hold_id}", from_status, to_status)
    with store.immediate() as db:
        cursor = db.execute("UPDATE legal_holds SET status = ?, decided_at = ?, decided_by = ? WHERE id = ? AND status = ?",
                            [to_status, at, by, hold_id, from_status])
        return cursor.rowcount == 1


def release(store: Store, hold_id: int, at: str, by: str, reason: str) -> bool:
    """Lift an active hold once; False when it is not active (already released, or never approved)."""
    require_move(f"legal hold #{hold_id}", HoldStatus.ACTIVE, HoldStatus.RELEASED)
    with store.immediate() as db:
        cursor = db.execute("UPDATE legal_holds SET status = ?, released_at = ?, released_by = ?, release_reason = ? "
                            "WHERE id = ? AND status = ?", [HoldStatus.RELEASED, at, by, reason, hold_id, HoldStatus.ACTIVE])
        return cursor.rowcount == 1
