"""The one call every module makes when something happens: `record_event`.

Each event is appended to the audit log (always), and to the timeline of every open incident
whose database or channel matches, ticking the DR checklist when the event is one of the
runbook's steps. It never raises into the caller: a backup must not fail because its audit row
could not be written (the failure is logged instead).

Event kinds (`area.what`) and what they tick:

    backup.started / backup.succeeded / backup.failed / backup.interrupted (the bot stopped: bot/shutdown.py)
        backup.succeeded with detail kind "safety"/"snapshot"/"pre-restore"  -> checkpoint
    restore.requested (detail backup_id)                                      -> select backup
    restore.approved / restore.rejected / restore.expired / restore.cancelled
    restore.checkpoint (the safety snapshot, detail backup_id of the snapshot) -> checkpoint
    restore.step (detail step)
    restore.succeeded (alias restore.finished, detail backup_id)              -> restore
    restore.failed
    restore.verified (detail passed: bool, backup_id)                         -> verify (when passed)
    health.* / db_health.* (alerts, checks) while an incident is open         -> monitor
    drill.succeeded / drill.failed
    alarm.raised / alarm.cleared: commands/incident/alarms.py (failures that open incidents; no tick)
    retention.hold_requested / _approved / _approval_withdrawn / _active / _rejected / _expired: legal holds
    incident.*  written by /incident itself
    console.command / console.refused: each line typed at the console outside the demo, and what it
        refused (:as, approving at the console); kept off incident timelines, which have the actions

`detail["backup_id"]` on a restore event names the backup used: its created_at is the incident's
recovery point. `restore.verified` with passed true sets the time of recovery.
"""

from __future__ import annotations

import logging
from datetime import datetime

from commands.chat.context import Actor, Services
from commands.incident.header import refresh_header
from commands.redact import redact
from state import incidents as incident_state
from state.backups import get_backup
from state.store import iso

log = logging.getLogger(__name__)

TEXT_LIMIT = 3000
TICKS = {
    "restore.requested": ("select_backup", "a restore request selected the backup"),
    "restore.checkpoint": ("checkpoint", "safety snapshot taken"),
    "restore.succeeded": ("restore", "restore finished"),
    "restore.finished": ("restore", "restore finished"),
    "restore.verified": ("verify", "restore verified"),
}
SAFETY_BACKUP_KINDS = {"safety", "snapshot", "pre-restore", "pre_restore", "checkpoint"}
MONITOR_PREFIXES = ("health.", "db_health.")
RECOVERY_KINDS = {"restore.requested", "restore.succeeded", "restore.finished", "restore.verified"}


def record_event(services: Services, kind: str, *, database: str | None = None, channel: str | None = None,
                 actor: str | Actor | None = None, text: str, at: datetime | str | None = None,
                 detail: dict | None = None, reply=None) -> int | None:
    """Append to the audit log and to matching open incidents; return the audit row id (None on failure).

    `actor` may be a user id or the command's Actor (whose channel is used when `channel` is not given, and
    whose source, and for the console OS user, go into the row's detail as `source` and `os_user`).
    `reply`, when given, is used to refresh the header of each incident whose checklist moved.
    """
    try:
        detail = dict(detail or {})
        if isinstance(actor, Actor):
            channel = channel or actor.channel
            detail.update(_source(actor))
            actor = actor.user
        when = _iso(at, services)
        text = redact(str(text), services.secrets())[:TEXT_LIMIT]
        recovery = _recovery_point(services, kind, detail)
        changed = []
        with services.store.immediate() as db:
            audit_id = incident_state.append_audit(db, when, kind, text, database, channel, actor, detail)
            if not kind.startswith(("incident.", "console.")):
                for incident in incident_state.matching_open_incidents(db, database, channel):
                    incident_state.add_entry(db, incident.id, when, kind, actor, text, audit_id=audit_id, detail=detail)
                    if _apply_to_incident(db, incident.id, kind, when, actor, detail, recovery):
                        changed.append(incident.id)
        if reply is not None and changed:
            for incident_id in changed:
                refresh_header(services, incident_id, reply)
        return audit_id
    except Exception:
        log.exception("could not record %s event %r", kind, str(text)[:200])
        return None


def _source(actor: Actor) -> dict:
    """Where the action came from: Slack, or the terminal console and the OS account that typed it (the
    console's `user` may be a played Slack ID in the demo, so the OS account is what says who was there)."""
    source = {"source": actor.source} if actor.source else {}
    if actor.os_user:
        source["os_user"] = actor.os_user
    return source


def _iso(at: datetime | str | None, services: Services) -> str:
    if at is None:
        return iso(services.clock())
    if isinstance(at, str):
        return iso(datetime.fromisoformat(at))
    return iso(at)


def _recovery_point(services: Services, kind: str, detail: dict) -> tuple[int | None, str | None]:
    """The backup a restore event names, and its created_at (the recovery point)."""
    if kind not in RECOVERY_KINDS:
        return None, None
    backup_id = detail.get("backup_id")
    point = detail.get("recovery_point")
    if backup_id is not None and point is None:
        record = get_backup(services.store, int(backup_id))
        point = record.created_at if record else None
    return (int(backup_id) if backup_id is not None else None), point


def _apply_to_incident(db, incident_id: int, kind: str, when: str, actor: str | None, detail: dict,
                       recovery: tuple[int | None, str | None]) -> bool:
    """Tick the checklist and record recovery facts; True when the header shows something new."""
    changed = False
    step = TICKS.get(kind)
    if kind == "restore.verified" and detail.get("passed") is False:
        step = None
    if kind == "backup.succeeded" and str(detail.get("kind", "")).lower() in SAFETY_BACKUP_KINDS:
        step = ("checkpoint", "safety snapshot taken")
    if kind.startswith(MONITOR_PREFIXES):
        step = ("monitor", f"{kind} during the incident")
    if step is not None:
        changed = incident_state.tick(db, incident_id, step[0], when, actor, step[1])
    backup_id, point = recovery
    if backup_id is not None or point is not None:
        incident_state.set_recovery(db, incident_id, backup_id=backup_id, recovery_point=point)
        changed = True
    if kind == "restore.verified" and detail.get("passed") is not False:
        incident_state.set_recovery(db, incident_id, recovered_at=when)
        changed = True
    return changed
