"""Failures open incidents: the bot speaks first.

A failed scheduled backup or drill, an RPO breach, WAL archiving that stopped, a stalled job, a
backup about to outlive the retention ceiling: each is one `raise_alarm`. It posts the alert in
`[channels] alerts` and opens a pre-filled incident there, or adds to the open incident for that
database (or the one open in the alerts channel: a channel holds one open incident), with the DR
checklist's first step (Identify) ticked and the evidence on its timeline. `clear_alarm` posts the
recovery and puts it on the same timeline; it never closes the incident: people declare recovery.

Both go through record_event, so the evidence is an audit row like everything else, and an alarm
kind (`alarm.raised` / `alarm.cleared`) does not tick Monitor the way a health event does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from commands.chat.context import Services
from commands.chat.reply import Notice, Reply
from commands.incident.audit import record_event
from commands.incident.header import header_for
from commands.redact import redact
from state import incidents as incident_state
from state.store import iso

log = logging.getLogger(__name__)

ALARM_SEVERITY = 2  # SEV2 major: a backup the runbook counts on is missing or stuck


@dataclass(frozen=True)
class Alarm:
    """What raise_alarm did: the alert text posted and the incident it went to (None without a channel)."""

    text: str
    incident_id: int | None
    opened: bool


def raise_alarm(services: Services, reply: Reply, database: str | None, problem: str, *,
                evidence: dict | None = None, text: str | None = None) -> Alarm:
    """Post `text` (default: `:rotating_light: DATABASE: PROBLEM`) in channels.alerts and open the alert
    incident for `database` there, or add to the open one; `evidence` goes on its timeline as the
    event's detail. The post raises when Slack refuses it, so a caller with once-per-breach state can
    put that state back and try again at its next check."""
    problem = redact(problem, services.secrets())
    text = text or f":rotating_light: {database + ': ' if database else ''}{problem}"
    channel = services.settings.channels.alerts
    if not channel:
        log.warning("no [channels] alerts configured: %s", text)
        record_event(services, "alarm.raised", database=database, text=text, detail=evidence)
        return Alarm(text, None, False)
    reply.post(Notice(text), channel=channel)
    incident, opened = _incident_for(services, reply, database, channel, problem)
    record_event(services, "alarm.raised", database=database, channel=channel, text=text,
                 detail={**(evidence or {}), "incident_id": incident.id}, reply=reply)
    if not opened and incident.header_message_id:
        try:
            reply.thread(incident.header_message_id, Notice(f"Added to incident #{incident.id}: {text}"))
        except Exception:
            log.exception("could not thread the alarm on incident #%s", incident.id)
    return Alarm(text, incident.id, opened)


def clear_alarm(services: Services, reply: Reply, database: str | None, text: str, *,
                evidence: dict | None = None) -> None:
    """The recovery: posted in channels.alerts and put on the open incident's timeline; the incident stays open."""
    channel = services.settings.channels.alerts
    if channel:
        reply.post(Notice(text), channel=channel)
    else:
        log.warning("no [channels] alerts configured: %s", text)
    record_event(services, "alarm.cleared", database=database, channel=channel, text=text, detail=evidence)


def _incident_for(services: Services, reply: Reply, database: str | None, channel: str,
                  problem: str) -> tuple[incident_state.Incident, bool]:
    """The open incident for `database` (any channel), else the one open in the alerts channel, else a new one."""
    with services.store.db() as db:
        matching = incident_state.matching_open_incidents(db, database, channel)
    for incident in matching:
        if database is not None and incident.database == database:
            return incident, False
    for incident in matching:
        if incident.channel == channel:
            return incident, False
    now = iso(services.clock())
    title = f"{database}: {problem}" if database else problem
    title = title if len(title) <= 200 else title[:199] + "…"
    try:
        incident = incident_state.open_incident(
            services.store, channel, title, ALARM_SEVERITY, database, None, now, now,
            f"Incident opened by backupbot: {title} (SEV{ALARM_SEVERITY}"
            + (f", database {database})" if database else ")"))
    except incident_state.IncidentAlreadyOpen as exc:  # opened meanwhile: add to it
        return exc.incident, False
    try:
        message_id = reply.post(header_for(services, incident), channel=channel)
        incident_state.set_header(services.store, incident.id, message_id)
    except Exception:
        log.exception("could not post the header of incident #%s", incident.id)
    return incident_state.get_incident(services.store, incident.id), True
