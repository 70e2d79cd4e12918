"""Point-in-time copies do not run forever: `/restore drop-copy ID`, or `[restore] copy_ttl_hours`
after the copy was verified, stops its cluster and removes its data directory.

A copy is a whole cluster of production data in the clear on this host, so it is named by the
restore request that made it, listed in `/backup list` and the digest until dropped
(commands/health/copies.py), and dropped by the person who asked for it or an approver. The data
directory removed is the one in state only after checking it is a `pitr-` folder directly in this
instance's scratch folder: a changed or planted row never makes the bot delete anything else.
"""

from __future__ import annotations

import logging
import os
import pwd
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from commands.chat.access import ANYONE, is_approver
from commands.chat.args import is_number, parse_args
from commands.chat.context import Actor, Services
from commands.chat.reply import Notice, Reply
from commands.errors import BackupbotError, NotAllowedError, NotFoundError, UsageError
from commands.incident.audit import record_event
from commands.pg import scratch
from commands.pg.pgbackrest.restored_cluster import postmaster_alive, start_again
from commands.units import human_duration
from state import approvals as request_state
from state.restored_clusters import RestoredClusterRow, get_restored_cluster, live_restored_clusters, mark_dropped
from state.store import iso

log = logging.getLogger(__name__)
DROP_USAGE = "`/restore drop-copy ID` (ID: the restore request that made the copy, as `/backup list` shows it)"


@dataclass(frozen=True)
class DropCopyRequest:
    request_id: int
    # checked in execute_drop_copy: only the copy's requester or an approver (who need not be an operator)
    permission = ANYONE


def parse_drop_copy(text: str, usage: str) -> DropCopyRequest:
    args = parse_args(text, {}, usage)
    if len(args.words) != 1 or not is_number(args.words[0].lstrip("#")):
        raise UsageError(f"drop-copy needs a copy's number, like `/restore drop-copy 3`: {DROP_USAGE}")
    return DropCopyRequest(int(args.words[0].lstrip("#")))


def execute_drop_copy(services: Services, request: DropCopyRequest, actor: Actor, reply: Reply) -> str:
    copy = get_restored_cluster(services.store, request.request_id)
    # HOOK: when request #N made a logical kept database (backupbot_prev_*, --to ... --into), drop that here
    if copy is None:
        raise NotFoundError(f"there is no point-in-time copy #{request.request_id}: `/backup list` lists the copies "
                            "that are running, by the number of the restore request that made them")
    if copy.dropped_at:
        raise UsageError(f"copy #{copy.request_id} was already dropped at {copy.dropped_at} ({copy.drop_reason})")
    # a console's OS account is never the Slack user who asked, nor an approver (commands/chat/access.py)
    if not (actor.slack_identity and actor.user == copy.requested_by) and not is_approver(services, actor):
        raise NotAllowedError(f"only <@{copy.requested_by}>, who asked for copy #{copy.request_id}, or an approver "
                              "may drop it")
    text = drop_copy(services, copy, by=actor.user, reason=f"dropped by <@{actor.user}>", reply=reply)
    reply.ephemeral(Notice(text))
    return text


def expire_copies(services: Services, reply: Reply | None = None) -> list[str]:
    """Drop every copy older than `[restore] copy_ttl_hours`; the scheduler runs this every minute, and
    start-up once (a copy's folder outlives a stopped bot, and its postgres may too)."""
    ttl = timedelta(hours=services.settings.restore.copy_ttl_hours)
    now = services.clock()
    done = []
    for copy in live_restored_clusters(services.store):
        if now - datetime.fromisoformat(copy.started_at) < ttl:
            continue
        reason = f"expired after {human_duration(ttl.total_seconds())} ([restore] copy_ttl_hours)"
        try:
            done.append(drop_copy(services, copy, by="ttl", reason=reason, reply=reply))
        except BackupbotError as exc:
            log.warning("copy #%s was not dropped: %s", copy.request_id, exc)
            done.append(f"copy #{copy.request_id} was not dropped: {exc}")
    return done


def resume_copies(services: Services) -> list[str]:
    """Start again every copy not dropped whose postmaster is gone. Under systemd (KillMode=mixed) or in a
    container a copy's postgres is in the bot's cgroup, so it stops with the bot; at start-up it comes back
    on its own port, so a copy someone is reading from survives a restart of the bot."""
    done = []
    for copy in live_restored_clusters(services.store):
        what = f"copy #{copy.request_id} (point-in-time copy of {copy.database} on 127.0.0.1:{copy.port})"
        try:
            datadir = _copy_folder(services, copy)
            if not datadir.exists() or postmaster_alive(datadir):
                continue
            start_again(datadir, _owner(datadir))
        except BackupbotError as exc:
            done.append(f"{what} had stopped and was not started again: {exc}")
            continue
        done.append(f"{what} had stopped with the bot; it runs again")
    return done


def _owner(datadir: Path) -> str | None:
    """As root, the copy's own user (pg_ctl refuses root); otherwise ourselves, who made it."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwuid(datadir.stat().st_uid).pw_name


def _copy_folder(services: Services, copy: RestoredClusterRow) -> Path:
    """The copy's data directory, only if it is a point-in-time copy's folder in this bot's scratch folder:
    a row changed to point elsewhere (the live cluster's data directory) is never followed."""
    datadir = Path(copy.datadir)
    root = scratch.scratch_root(services.settings)
    if datadir.parent != root or not datadir.name.startswith("pitr-") or datadir.is_symlink():
        raise BackupbotError(f"copy #{copy.request_id}'s data directory {datadir} is not a point-in-time copy's folder "
                             f"in this bot's scratch folder {root}: nothing was touched; stop and remove it by hand")
    return datadir


def drop_copy(services: Services, copy: RestoredClusterRow, *, by: str, reason: str, reply: Reply | None) -> str:
    """Stop the copy's postgres (pg_ctl stop -m fast, as its owner), remove its data directory, mark it
    dropped; returns what was done, also posted in the restore request's thread."""
    datadir = _copy_folder(services, copy)
    if not mark_dropped(services.store, copy.request_id, iso(services.clock()), by, reason):
        raise UsageError(f"copy #{copy.request_id} was already dropped")
    existed = datadir.exists()
    scratch.remove_job(services.settings, datadir, mode="fast")
    what = f"copy #{copy.request_id} (point-in-time copy of {copy.database} on 127.0.0.1:{copy.port})"
    if datadir.exists():
        text = f":warning: {what} is {reason}, but {datadir} could not be removed: remove it by hand"
    elif existed:
        text = f":wastebasket: {what} is {reason}: its cluster was stopped and its data directory {datadir} removed."
    else:
        text = f":wastebasket: {what} is {reason}; its data directory {datadir} was already gone."
    row = request_state.get_request(services.store, copy.request_id)
    if reply is not None and row is not None and row.message_id:
        try:
            reply.thread(row.message_id, Notice(text))
        except Exception:  # the copy is dropped either way; the audit log has it
            log.exception("could not post the drop of copy #%s", copy.request_id)
    record_event(services, "restore.copy_dropped", database=copy.database, actor=by if by != "ttl" else None,
                 channel=row.channel if row else None, text=text,
                 detail={"request_id": copy.request_id, "port": copy.port, "reason": reason})
    return text
