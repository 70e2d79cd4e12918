"""Where a restore request stands, as its message's status line says it: one wording for every kind."""

from __future__ import annotations

STATUS_LINES = {
    "dry-run": "Dry run: nothing was requested.",
    "running": ":hourglass_flowing_sand: RUNNING",
    "succeeded": ":white_check_mark: RESTORED and verified",
    "failed": ":x: FAILED",
    "rejected": ":no_entry: REJECTED",
    "expired": ":hourglass: EXPIRED: not approved in time; nothing was restored",
    "cancelled": ":wastebasket: CANCELLED",
    "interrupted": ":warning: INTERRUPTED by a bot restart",
}


def status_line(status: str, required: int, approvers: tuple[str, ...], approve_emoji: str, reject_emoji: str,
                succeeded: str = STATUS_LINES["succeeded"]) -> str:
    if status == "succeeded":
        return succeeded
    if status != "pending":
        return STATUS_LINES.get(status, status.upper())
    if not required:
        return "No approval needed: restores into new databases are not approved here ([access])."
    voters = f" ({', '.join(f'<@{u}>' for u in approvers)})" if approvers else ""
    return (f"Waiting for {required} approval(s) from approvers: :{approve_emoji}: approves, "
            f":{reject_emoji}: rejects. Approvals so far: {len(approvers)}/{required}{voters}")
