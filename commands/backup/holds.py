"""Legal holds: `/backup keep ID --reason TEXT`, the only thing that keeps a backup past max_age_days.

The 30-day ceiling is a legal one, so passing it is a decision people make on the record: the hold
is posted as a request and becomes active when `[access] required_approvals` approvers (never the
requester) react with the approve emoji, exactly once (a conditional UPDATE in state/holds.py), as a
restore is approved. The request, every vote and the decision are audit events; the hold row stays.

`ceiling_lines` is what `/backup list`, the digest and `/backup prune --dry-run` show: the active
holds and the backup the ceiling deletes next.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from commands.backup.retention import next_at_ceiling
from commands.chat.access import ANYONE, OPERATOR, is_approver, require_approvable_where_asked
from commands.chat.args import parse_args
from commands.chat.context import Actor, ReactionEvent, Services
from commands.chat.reply import Notice, Reply, check_can_collect_reactions
from commands.errors import NotAllowedError, NotFoundError, UsageError
from commands.incident.audit import record_event
from commands.redact import redact
from commands.units import human_duration
from state import holds as hold_state
from state.backups import get_backup, list_backups
from state.statuses import HoldStatus
from state.store import iso

USAGE = "Usage: `/backup keep ID --reason TEXT` (a legal hold past max_age_days, approved like a restore)"
RELEASE_USAGE = ("Usage: `/backup release HOLD --reason TEXT` (an approver lifts legal hold #HOLD: its backup is then "
                 "deleted at the ceiling like any other)")
MAX_REASON = 500


@dataclass(frozen=True)
class KeepRequest:
    backup_id: int
    reason: str
    permission = OPERATOR


def _number_and_reason(text: str, usage: str, what: str, why: str) -> tuple[int, str]:
    """`ID --reason TEXT`, both required: the reason is the record of the decision."""
    args = parse_args(text, {"--reason": "rest"}, usage)
    if len(args.words) != 1 or not args.words[0].lstrip("#").isdigit():
        raise UsageError(f"name one {what} by its number\n{usage}")
    reason = str(args.flags.get("--reason") or "").strip()
    if not reason:
        raise UsageError(f"{why}\n{usage}")
    if len(reason) > MAX_REASON:
        raise UsageError(f"--reason is at most {MAX_REASON} characters")
    return int(args.words[0].lstrip("#")), reason


def parse_keep(text: str, services: Services) -> KeepRequest:
    return KeepRequest(*_number_and_reason(text, USAGE, "backup", "a legal hold needs --reason: it is the record "
                                           "of why the ceiling was passed"))


@dataclass(frozen=True)
class ReleaseRequest:
    hold_id: int
    reason: str
    # checked in execute_release: only approvers, as only approvers made the hold active
    permission = ANYONE


def parse_release(text: str, services: Services) -> ReleaseRequest:
    return ReleaseRequest(*_number_and_reason(text, RELEASE_USAGE, "legal hold (`/backup list` shows them)",
                                              "releasing a legal hold needs --reason: it is the record of why it ended"))


@dataclass(frozen=True)
class HoldMessage:
    hold: hold_state.Hold
    created_at: str
    approve_emoji: str
    reject_emoji: str

    def text(self) -> str:
        h = self.hold
        head = {HoldStatus.PENDING: ":lock: Legal hold request", HoldStatus.ACTIVE: ":lock: Legal hold ACTIVE",
                HoldStatus.REJECTED: ":no_entry: Legal hold REJECTED",
                HoldStatus.EXPIRED: ":hourglass: Legal hold EXPIRED",
                HoldStatus.RELEASED: ":unlock: Legal hold RELEASED"}.get(h.status, f"Legal hold {h.status}")
        lines = [f"{head} #{h.id}: keep backup #{h.backup_id} of {h.database} (taken {self.created_at}) past "
                 "max_age_days", f"Reason: {h.reason}", f"Asked by <@{h.requester}>"]
        if h.status == HoldStatus.PENDING:
            lines.append(f"Needs {h.required_approvals} approver(s) other than the requester: react "
                         f":{self.approve_emoji}: to approve, :{self.reject_emoji}: to reject; expires {h.expires_at}.")
        elif h.decided_by:
            lines.append(f"Decided at {h.decided_at} by <@{h.decided_by}>")
        if h.released_by:
            lines.append(f"Released at {h.released_at} by <@{h.released_by}>: {h.release_reason}")
        return "\n".join(lines)


def _message(services: Services, hold: hold_state.Hold) -> HoldMessage:
    record = get_backup(services.store, hold.backup_id)
    access = services.settings.access
    return HoldMessage(hold, record.created_at if record else "?", access.approve_emoji, access.reject_emoji)


def execute_keep(services: Services, request: KeepRequest, actor: Actor, reply: Reply) -> HoldMessage:
    record = get_backup(services.store, request.backup_id)
    if record is None:
        raise NotFoundError(f"there is no backup #{request.backup_id}")
    if record.gone_at:
        raise UsageError(f"backup #{record.id} is already deleted ({record.gone_at}): there is nothing to keep")
    access = services.settings.access
    check_can_collect_reactions(reply)
    require_approvable_where_asked(actor, "a legal hold")
    now = services.clock()
    reason = redact(request.reason, services.secrets())
    hold = hold_state.create_hold(services.store, record.id, record.database, reason, actor.user, actor.channel,
                                  access.required_approvals, iso(now),
                                  iso(now + timedelta(minutes=access.approval_ttl_minutes)))
    message = _message(services, hold)
    message_id = reply.post(message)
    hold_state.set_message(services.store, hold.id, message_id)
    if message_id:
        reply.react(message_id, access.approve_emoji)
        reply.react(message_id, access.reject_emoji)
    record_event(services, "retention.hold_requested", database=record.database, actor=actor,
                 text=f"Legal hold #{hold.id} asked for backup #{record.id}: {reason}",
                 detail={"hold_id": hold.id, "backup_id": record.id, "reason": reason})
    return message


def execute_release(services: Services, request: ReleaseRequest, actor: Actor, reply: Reply) -> str:
    """Lift an active hold: an approver's decision on the record (reason, who, when), posted in the hold's
    thread and the audit log. The backup is not deleted here: the next prune deletes it at the ceiling."""
    hold = hold_state.get_hold(services.store, request.hold_id)
    if hold is None:
        raise NotFoundError(f"there is no legal hold #{request.hold_id}")
    if not is_approver(services, actor):
        raise NotAllowedError(f"only an approver may release legal hold #{hold.id}: approvers made it active")
    reason = redact(request.reason, services.secrets())
    if not hold_state.release(services.store, hold.id, iso(services.clock()), actor.user, reason):
        raise UsageError(f"legal hold #{hold.id} is {hold_state.get_hold(services.store, hold.id).status}, not active: "
                         "there is nothing to release")
    rules = services.settings.retention_for(hold.database)
    text = (f":unlock: Legal hold #{hold.id} released by <@{actor.user}>: {reason}. Backup #{hold.backup_id} of "
            f"{hold.database} is no longer kept past the {rules.max_age_days}-day ceiling; the next prune deletes it "
            "once it is older.")
    _refresh(services, hold.id, reply)
    if hold.message_id:
        reply.thread(hold.message_id, Notice(text))
    record_event(services, "retention.hold_released", database=hold.database, actor=actor, text=text,
                 detail={"hold_id": hold.id, "backup_id": hold.backup_id, "reason": reason})
    reply.ephemeral(Notice(text))
    return text


def on_hold_reaction(services: Services, event: ReactionEvent, reply: Reply) -> None:
    """Approvers' reactions on a hold request: the same rules as a restore's (requester and non-approvers
    do not count, removing a reaction withdraws the vote, the deciding vote activates it once)."""
    access = services.settings.access
    if event.emoji not in (access.approve_emoji, access.reject_emoji):
        return
    hold = hold_state.hold_for_message(services.store, event.channel, event.message_id)
    if hold is None:
        return
    now = iso(services.clock())
    if hold.status == HoldStatus.PENDING and now >= hold.expires_at:
        expire_holds(services, reply)
        hold = hold_state.get_hold(services.store, hold.id)
    if hold.status != HoldStatus.PENDING:
        if event.added:
            reply.thread(hold.message_id, Notice(f"Legal hold #{hold.id} is {hold.status}: "
                                                 f"<@{event.user}>'s reaction does not count."))
        return
    if event.user == hold.requester or not is_approver(services, event.actor()):
        if event.added:
            why = "asked for this hold" if event.user == hold.requester else "is not an approver"
            reply.thread(hold.message_id, Notice(f"<@{event.user}> {why}; their reaction does not count."))
        return
    if event.emoji == access.reject_emoji:
        if event.added and hold_state.transition(services.store, hold.id, HoldStatus.PENDING, HoldStatus.REJECTED,
                                                 now, by=event.user):
            _refresh(services, hold.id, reply)
            reply.thread(hold.message_id, Notice(f"<@{event.user}> rejected legal hold #{hold.id}: backup "
                                                 f"#{hold.backup_id} is deleted at the ceiling."))
            record_event(services, "retention.hold_rejected", database=hold.database, actor=event.actor(),
                         text=f"Legal hold #{hold.id} rejected by <@{event.user}>", detail={"hold_id": hold.id})
        return
    voters = hold_state.vote(services.store, hold.id, event.user, event.added, now)
    verb = "approved" if event.added else "withdrew their approval of"
    record_event(services, "retention.hold_approved" if event.added else "retention.hold_approval_withdrawn",
                 database=hold.database, actor=event.actor(),
                 text=f"<@{event.user}> {verb} legal hold #{hold.id} ({len(voters)}/{hold.required_approvals})",
                 detail={"hold_id": hold.id})
    if event.added and len(voters) >= hold.required_approvals and hold_state.transition(
            services.store, hold.id, HoldStatus.PENDING, HoldStatus.ACTIVE, now, by=event.user):
        _refresh(services, hold.id, reply)
        reply.thread(hold.message_id, Notice(f":lock: Legal hold #{hold.id} is active: backup #{hold.backup_id} "
                                             "is kept past max_age_days."))
        record_event(services, "retention.hold_active", database=hold.database, actor=event.actor(),
                     text=f"Legal hold #{hold.id} active: backup #{hold.backup_id} kept past the ceiling ({hold.reason})",
                     detail={"hold_id": hold.id, "backup_id": hold.backup_id, "approvers": voters})
    else:
        reply.thread(hold.message_id, Notice(f"<@{event.user}> {verb} legal hold #{hold.id} "
                                             f"({len(voters)}/{hold.required_approvals})"))


def expire_holds(services: Services, reply: Reply) -> list[int]:
    """Expire pending holds past `approval_ttl_minutes`; the scheduler calls this every minute, reactions too."""
    now = iso(services.clock())
    expired = []
    for hold in hold_state.due_to_expire(services.store, now):
        if hold_state.transition(services.store, hold.id, HoldStatus.PENDING, HoldStatus.EXPIRED, now):
            expired.append(hold.id)
            _refresh(services, hold.id, reply)
            record_event(services, "retention.hold_expired", database=hold.database, channel=hold.channel,
                         text=f"Legal hold #{hold.id} expired without enough approvals", detail={"hold_id": hold.id})
    return expired


def _refresh(services: Services, hold_id: int, reply: Reply) -> None:
    hold = hold_state.get_hold(services.store, hold_id)
    if hold.message_id:
        reply.update(hold.message_id, _message(services, hold))


def hold_labels(services: Services, database: str) -> dict[int, str]:
    """What retention says keeps a held backup: `legal hold #2: REASON`."""
    return {backup_id: f"legal hold #{h.id}: {h.reason}"
            for backup_id, h in hold_state.active_holds(services.store, database).items()}


def ceiling_lines(services: Services, database: str, now: datetime, indent: str = "  ") -> list[str]:
    """The active holds and what the ceiling deletes next, for list, digest and prune --dry-run."""
    rules = services.settings.retention_for(database)
    holds = hold_state.active_holds(services.store, database)
    lines = [f"{indent}:lock: legal hold #{h.id} keeps backup #{backup_id} past the ceiling: {h.reason} "
             f"(asked by <@{h.requester}>, approved {h.decided_at})" for backup_id, h in holds.items()]
    upcoming = next_at_ceiling(list_backups(services.store, database), rules, holds)
    if upcoming is not None:
        record, due = upcoming
        when = "now (at the next prune)" if due <= now else f"{iso(due)} (in {human_duration((due - now).total_seconds())})"
        lines.append(f"{indent}next at the {rules.max_age_days}-day ceiling: backup #{record.id} of {database}, "
                     f"deleted {when}")
    return lines


EXECUTORS = {KeepRequest: execute_keep, ReleaseRequest: execute_release}
