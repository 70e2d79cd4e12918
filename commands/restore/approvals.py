"""Approval rules for restore requests: who counts, withdrawal, rejection, expiry, exactly-once start.

The requester never counts, reactions from anyone who is not an approver are ignored (the thread
says so once), skin tones count as the base emoji (dispatch strips them), removing a reaction
withdraws the vote until the restore starts, and `required_approvals` distinct approvers start it.
A reaction counts only on the request's own message in the request's own channel: message ids come
from more than one adapter and console session, so an id alone could name someone else's request.
"""

from __future__ import annotations

import logging

from commands.chat.access import is_approver
from commands.chat.context import ReactionEvent, Services
from commands.chat.reply import Notice, Reply
from commands.incident.audit import record_event
from commands.restore.requests import _refresh, expire_requests, start_request
from state import approvals as request_state
from state.store import iso

log = logging.getLogger(__name__)


def _log_decision(row: request_state.RestoreRequestRow, user: str, outcome: str, votes: int | None = None) -> None:
    """One line per approval, withdrawal or rejection, with fields for --log-format json (bot/logs.py)."""
    log.info("restore request #%s of %s %s by %s", row.id, row.database, outcome, user,
             extra={"fields": {"request_id": row.id, "job_id": row.job_id,
                               "database": row.database, "user": user, "outcome": outcome, "votes": votes,
                               "required": row.required_approvals}})


def approvals_needed(row: request_state.RestoreRequestRow, approvers: list[str]) -> int:
    return max(0, row.required_approvals - len(approvers))


def on_reaction(services: Services, event: ReactionEvent, reply: Reply) -> None:
    access = services.settings.access
    if event.emoji not in (access.approve_emoji, access.reject_emoji):
        return
    expire_requests(services, reply)
    row = request_state.request_for_message(services.store, event.channel, event.message_id)
    if row is None:
        return  # a reaction on some other message
    now = iso(services.clock())
    if row.status != request_state.PENDING:
        if event.added and request_state.first_notice(services.store, row.id, event.user, f"closed-{row.status}"):
            reply.thread(row.message_id, Notice(f"Restore request #{row.id} is {row.status}: "
                                                f"<@{event.user}>'s reaction does not count."))
        return
    if event.user == row.requester:
        if event.added and request_state.first_notice(services.store, row.id, event.user, "self"):
            reply.thread(row.message_id, Notice(f"<@{event.user}> asked for this restore, so their own reaction "
                                                "does not count: another approver must decide."))
        return
    if not is_approver(services, event.actor()):
        if event.added and request_state.first_notice(services.store, row.id, event.user, "not-approver"):
            reply.thread(row.message_id, Notice(f"<@{event.user}> is not an approver; their reaction is ignored."))
        return
    if event.emoji == access.reject_emoji:
        if event.added and request_state.transition(services.store, row.id, request_state.PENDING, request_state.REJECTED, now):
            _log_decision(row, event.user, "rejected")
            _refresh(services, row.id, reply)
            reply.thread(row.message_id, Notice(f"<@{event.user}> rejected restore request #{row.id}. Nothing was restored."))
            record_event(services, "restore.rejected", database=row.database, actor=event.actor(),
                         text=f"Restore request #{row.id} rejected by <@{event.user}>", reply=reply)
        return
    voters = request_state.cast_vote(services.store, row.id, event.user, "approve", event.added, now)
    if request_state.get_request(services.store, row.id).status != request_state.PENDING:
        return  # it started (or ended) while this vote was being counted
    verb = "approved" if event.added else "withdrew their approval"
    _log_decision(row, event.user, "approved" if event.added else "approval withdrawn", len(voters))
    reply.thread(row.message_id, Notice(f"<@{event.user}> {verb} ({len(voters)}/{row.required_approvals})"))
    record_event(services, "restore.approved" if event.added else "restore.approval_withdrawn", database=row.database,
                 actor=event.actor(),
                 text=f"<@{event.user}> {verb} restore request #{row.id} ({len(voters)}/{row.required_approvals})")
    _refresh(services, row.id, reply)
    if event.added and approvals_needed(row, voters) == 0:
        start_request(services, row, reply)


