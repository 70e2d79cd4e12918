"""Every lifecycle's statuses and the moves allowed between them, in one place.

A status is stored as its word in SQLite; these enums are the only spelling of those words in the
code, and `require_move` is the one check every writer goes through, so a finished job cannot be
finished again and an expired request cannot start.
"""

from __future__ import annotations

from enum import StrEnum

from commands.errors import BackupbotError


class IllegalTransition(BackupbotError):
    """A status change the lifecycle does not allow (a second verdict, a start after expiry)."""


class JobStatus(StrEnum):
    """A job (backup, restore, drill) and a scheduled run: running until its one verdict."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class RequestStatus(StrEnum):
    """A restore request: pending votes, then started exactly once, then its verdict."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class Verification(StrEnum):
    """What the last drill of a backup proved; a backup can be drilled again at any time."""

    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    FAILED = "failed verification"


class HoldStatus(StrEnum):
    """A legal hold (`/backup keep`): pending votes, then active exactly once, or rejected or expired."""

    PENDING = "pending"
    ACTIVE = "active"
    REJECTED = "rejected"
    EXPIRED = "expired"
    RELEASED = "released"  # lifted by an approver once the reason for it ended


JOB_MOVES: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.INTERRUPTED}),
}

REQUEST_MOVES: dict[RequestStatus, frozenset[RequestStatus]] = {
    RequestStatus.PENDING: frozenset({RequestStatus.RUNNING, RequestStatus.REJECTED, RequestStatus.EXPIRED,
                                      RequestStatus.CANCELLED}),
    RequestStatus.RUNNING: frozenset({RequestStatus.SUCCEEDED, RequestStatus.FAILED, RequestStatus.INTERRUPTED}),
}

VERIFICATION_MOVES: dict[Verification, frozenset[Verification]] = {
    status: frozenset({Verification.VERIFIED, Verification.FAILED}) for status in Verification
}

HOLD_MOVES: dict[HoldStatus, frozenset[HoldStatus]] = {
    HoldStatus.PENDING: frozenset({HoldStatus.ACTIVE, HoldStatus.REJECTED, HoldStatus.EXPIRED}),
    HoldStatus.ACTIVE: frozenset({HoldStatus.RELEASED}),
}

MOVES = {JobStatus: JOB_MOVES, RequestStatus: REQUEST_MOVES, Verification: VERIFICATION_MOVES, HoldStatus: HOLD_MOVES}


def allowed(from_status: StrEnum, to_status: StrEnum) -> bool:
    kind = type(to_status)
    return kind(to_status) in MOVES[kind].get(kind(from_status), frozenset())


def require_move(what: str, from_status: str, to_status: StrEnum) -> None:
    """Raise IllegalTransition unless `what` may go from `from_status` to `to_status`."""
    kind = type(to_status)
    try:
        current = kind(from_status)
    except ValueError:
        raise IllegalTransition(f"{what} has the unknown status {from_status!r}") from None
    if not allowed(current, to_status):
        raise IllegalTransition(f"{what} cannot go from {current} to {to_status}")


def final_statuses(kind: type[StrEnum]) -> frozenset:
    """The statuses nothing moves on from."""
    return frozenset(s for s in kind if not MOVES[kind].get(s))
