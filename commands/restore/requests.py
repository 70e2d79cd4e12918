"""Restore requests from posting to their end: submit, start exactly once, expire, offer a rollback.

Every status change is a single conditional UPDATE in state/, so two approvals arriving together
start one restore. A failed restore over an existing database offers a rollback to its safety
snapshot as a new request, which needs approval like any other.
"""

from __future__ import annotations

from datetime import timedelta

from commands.chat.access import require_approvable_where_asked
from commands.chat.context import Actor, Services
from commands.chat.reply import Notice, Reply, check_can_collect_reactions
from commands.errors import BackupbotError
from commands.incident.audit import record_event
from commands.pg.restore.databases import database_exists, databases_like
from commands.pg.restore.side import reopen_database
from commands.pg.subscriptions import drop_restored_database
from commands.redact import redact
from commands.restore.pitr import remove_restored_copy
from commands.restore.plan import RestoreRequest, build_plan, plan_message
from commands.restore.plans import LOGICAL, Plan, PointInTimePlan, plan_from_dict, plan_to_dict
from commands.restore.rules import (
    NEW_DATABASE,
    PREVIOUS_PREFIX,
    SIDE_DATABASE,
    SIDE_PREFIX,
    like_pattern,
    owner_of,
)
from commands.restore.run import run_restore_request
from state import approvals as request_state
from state.store import iso


def submit_plan(services: Services, plan: Plan, actor: Actor, reply: Reply, note: str | None = None):
    """Store the immutable plan as a request and post it; a restore into a new database starts at once."""
    access = services.settings.access
    now = services.clock()
    check_can_collect_reactions(reply)  # a request nobody can approve (bot not in the channel) is never posted
    # a new database holds a copy of production data: approved too, unless the config says otherwise
    needs_approval = plan.needs_approval or access.approve_new_database_restores
    if needs_approval:
        require_approvable_where_asked(actor, "this restore")
    row = request_state.create_request(
        services.store, plan_to_dict(plan), plan.database, actor.user, actor.channel, needs_approval,
        access.required_approvals if needs_approval else 0, iso(now),
        iso(now + timedelta(minutes=access.approval_ttl_minutes)),
        created_dbname=plan.created_dbname, backup_size=plan.backup_size,
    )
    message = plan_message(services, row, note=note)
    message_id = reply.post(message)
    request_state.set_message(services.store, row.id, message_id)
    record_event(services, "restore.requested", database=plan.database, actor=actor,
                 text=f"Restore request #{row.id}: backup #{plan.backup_id or '?'} into {plan.target}"
                      + (" with --allow-privileged-roles" if plan.allow_privileged_roles else ""),
                 detail={"backup_id" if plan.kind == LOGICAL else "physical_backup_id": plan.backup_id,
                         "request_id": row.id, "allow_privileged_roles": plan.allow_privileged_roles}, reply=reply)
    if needs_approval:
        if message_id:
            reply.react(message_id, access.approve_emoji)
            reply.react(message_id, access.reject_emoji)
        return message
    if message_id:
        reply.thread(message_id, Notice("The target database is new, so nothing is replaced: starting without approval."))
    start_request(services, request_state.get_request(services.store, row.id), reply)
    return message


def start_request(services: Services, row: request_state.RestoreRequestRow, reply: Reply) -> bool:
    """Start the restore once: only the caller whose pending→running change wins runs it."""
    if not request_state.transition(services.store, row.id, request_state.PENDING, request_state.RUNNING,
                                    iso(services.clock())):
        return False
    row = request_state.get_request(services.store, row.id)
    result = run_restore_request(services, row, reply)
    if result.rollback_snapshot_id:
        offer_rollback(services, row, result.rollback_snapshot_id, reply)
    return True


def expire_requests(services: Services, reply: Reply) -> list[int]:
    """Expire pending requests past their TTL; the scheduler calls this every minute, reactions too."""
    expired = []
    for row in request_state.due_to_expire(services.store, iso(services.clock())):
        if request_state.transition(services.store, row.id, request_state.PENDING, request_state.EXPIRED):
            expired.append(row.id)
            if row.message_id:
                _refresh(services, row.id, reply)
                reply.thread(row.message_id, Notice(f"Restore request #{row.id} EXPIRED after "
                                                    f"{services.settings.access.approval_ttl_minutes} minutes without "
                                                    "enough approvals. Nothing was restored."))
            record_event(services, "restore.expired", database=row.database, channel=row.channel,
                         text=f"Restore request #{row.id} expired")
    return expired


def offer_rollback(services: Services, row: request_state.RestoreRequestRow, snapshot_id: int, reply: Reply) -> None:
    """A new request to put the safety snapshot back; it needs approval like any other."""
    plan = plan_from_dict(row.plan)
    into = plan.target_dbname
    try:
        rollback = build_plan(services, RestoreRequest(backup=str(snapshot_id), database=plan.database, into=into,
                                                         to=plan.server),
                              Actor(user=row.requester, channel=row.channel))
        submit_plan(services, rollback, Actor(user=row.requester, channel=row.channel), reply,
                    note=f"Rollback to the safety snapshot taken before restore request #{row.id}.")
    except BackupbotError as exc:
        reply.thread(row.message_id, Notice(f"Could not offer a rollback to backup #{snapshot_id}: {exc}"))


def _refresh(services: Services, request_id: int, reply: Reply) -> None:
    row = request_state.get_request(services.store, request_id)
    if row.message_id:
        reply.update(row.message_id, plan_message(services, row))


def clean_up_interrupted(services: Services, rows: list[request_state.RestoreRequestRow]) -> list[str]:
    """After a restart: what restores that were running when the bot died left behind. Their side
    databases, a new database they had begun to fill, and a point-in-time copy they had started are
    removed, so a rerun starts clean and nothing half-restored is mistaken for a result."""
    done = []
    for row in rows:
        try:
            plan = plan_from_dict(row.plan)
            if isinstance(plan, PointInTimePlan):
                pitr = plan
                removed = remove_restored_copy(services, pitr)
                if pitr.into:  # a new database it had begun to fill
                    dsn = (services.settings.target(pitr.server).require_url() if pitr.server
                           else services.settings.database(pitr.database).require_url())
                    if database_exists(dsn, pitr.into):
                        drop_restored_database(dsn, pitr.into)
                        removed.append(f"dropped {pitr.into}, which it had created")
                done += [f"restore request #{row.id}: {what}" for what in removed]
                continue
            dsn = (services.settings.target(plan.server).require_url() if plan.server
                   else services.settings.database(plan.database).require_url())
            if plan.method == SIDE_DATABASE and reopen_database(dsn, plan.target_dbname):
                done.append(f"restore request #{row.id}: {plan.target_dbname} takes connections again (the swap it "
                            "had begun shut them)")
            leftovers = [name for name in databases_like(dsn, like_pattern(SIDE_PREFIX, row.id))
                         if owner_of(name, SIDE_PREFIX) == row.id]
            if plan.method == NEW_DATABASE and database_exists(dsn, plan.target_dbname):
                leftovers.append(plan.target_dbname)
            for name in leftovers:
                drop_restored_database(dsn, name)  # its subscriptions first, never reaching a publisher
                done.append(f"restore request #{row.id}: dropped {name}, which it had created")
            for name in databases_like(dsn, like_pattern(PREVIOUS_PREFIX, row.id)):  # the swap had happened
                if owner_of(name, PREVIOUS_PREFIX) == row.id:
                    done.append(f"restore request #{row.id}: {name} holds {plan.target_dbname} as it was before the "
                                f"restore, and {plan.target_dbname} the restored backup; nothing was dropped")
        except Exception as exc:  # reported, never hidden: an admin may have to drop it by hand
            done.append(f"restore request #{row.id}: could not clean up ({redact(str(exc), services.secrets())})")
    return done
