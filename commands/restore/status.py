"""A restore request's channel message, whatever its plan: where it stands, who approved, its steps.

One wording for every kind of plan (a logical restore, a point-in-time restore); each kind's
message class adds only how its plan reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from commands.chat.context import Services
from state import approvals as request_state
from state.statuses import RequestStatus

DRY_RUN = "dry-run"  # a plan shown, never stored: not a request status
STATUS_LINES = {
    DRY_RUN: "Dry run: nothing was requested, and nothing was written to any server.",
    RequestStatus.RUNNING: ":hourglass_flowing_sand: RUNNING",
    RequestStatus.SUCCEEDED: ":white_check_mark: RESTORED and verified",
    RequestStatus.FAILED: ":x: FAILED",
    RequestStatus.REJECTED: ":no_entry: REJECTED",
    RequestStatus.EXPIRED: ":hourglass: EXPIRED: not approved in time; nothing was restored",
    RequestStatus.CANCELLED: ":wastebasket: CANCELLED",
    RequestStatus.INTERRUPTED: ":warning: INTERRUPTED by a bot restart",
}


def status_line(status: str, required: int, approvers: tuple[str, ...], approve_emoji: str, reject_emoji: str,
                succeeded: str = STATUS_LINES[RequestStatus.SUCCEEDED]) -> str:
    if status == RequestStatus.SUCCEEDED:
        return succeeded
    if status != RequestStatus.PENDING:
        return STATUS_LINES.get(status, status.upper())
    if not required:
        return "No approval needed: restores into new databases are not approved here ([access])."
    voters = f" ({', '.join(f'<@{u}>' for u in approvers)})" if approvers else ""
    return (f"Waiting for {required} approval(s) from approvers: :{approve_emoji}: approves, "
            f":{reject_emoji}: rejects. Approvals so far: {len(approvers)}/{required}{voters}")


@dataclass(frozen=True)
class RequestMessage:
    request_id: int | None
    plan: Any  # the kind's frozen plan
    status: str = RequestStatus.PENDING
    approvers: tuple[str, ...] = ()
    required: int = 1
    approve_emoji: str = "white_check_mark"
    reject_emoji: str = "x"
    now: datetime | None = None
    note: str | None = None
    steps: tuple[str, ...] = field(default_factory=tuple)
    succeeded_text = STATUS_LINES[RequestStatus.SUCCEEDED]

    @property
    def title(self) -> str:
        return f"Restore request #{self.request_id}" if self.request_id else "Restore plan (dry run)"

    def status_line(self) -> str:
        return status_line(self.status, self.required, self.approvers, self.approve_emoji, self.reject_emoji,
                           succeeded=self.succeeded_text)


def request_message(services: Services, row: request_state.RestoreRequestRow, message_class: type, plan,
                    **overrides) -> RequestMessage:
    """The message of stored request `row` as it stands now (its votes, its status)."""
    access = services.settings.access
    values = dict(request_id=row.id, plan=plan, status=row.status,
                  approvers=tuple(request_state.active_voters(services.store, row.id, "approve")),
                  required=row.required_approvals, approve_emoji=access.approve_emoji,
                  reject_emoji=access.reject_emoji, now=services.clock())
    values.update(overrides)
    return message_class(**values)
