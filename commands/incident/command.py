"""Running /incident: open, note, check, close, timeline, list, export; the :stopwatch: reaction.

One open incident per channel (a unique index makes opening atomic). `open` posts a header the
bot edits as the incident moves; backups, restores, approvals and health alerts land on the
timeline through commands.incident.audit.record_event.

Permissions: anyone may open an incident, add notes and read or export it: declaring an incident
must never wait for an admin, and none of it touches a database. Closing needs an operator (with
no [access] operators, that is everyone): it ends automatic capture and freezes the recovery
measurements, so the people trusted to run restores are the ones who declare recovery done.

The text becomes a request in commands.incident.parse; the messages are in commands.incident.messages.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

from commands.chat.context import Actor, Services
from commands.chat.help import HelpRequest, execute_help
from commands.chat.reply import Notice, Reply
from commands.errors import BackupbotError, NotAllowedError, NotFoundError, UsageError
from commands.incident.export import export_incident
from commands.incident.header import header_for, refresh_header
from commands.incident.messages import CHECKLIST, CloseSummary, IncidentHeader, IncidentList, TimelinePage, local, measure
from commands.incident.parse import (
    MAX_TEXT,
    CheckRequest,
    CloseRequest,
    ExportRequest,
    ListRequest,
    NoteRequest,
    OpenRequest,
    StatusRequest,
    TimelineRequest,
    resolve_at,
)
from commands.redact import redact
from commands.settings.incidents import zone_named
from state import incidents as state
from state.store import iso

log = logging.getLogger(__name__)


class IncidentStateError(BackupbotError):
    """The channel has (or has no) open incident, unlike what the command needs."""


# ---------------------------------------------------------------- executors


def _channel(actor: Actor) -> str:
    if not actor.channel:
        raise UsageError("run /incident in a channel: an incident belongs to the channel it was opened in")
    return actor.channel


def _open_here(services: Services, actor: Actor) -> state.Incident:
    incident = state.open_incident_in(services.store, _channel(actor))
    if incident is None:
        raise IncidentStateError("no incident is open in this channel. Open one with `/incident open TITLE`.")
    return incident


def _chosen(services: Services, actor: Actor, incident_id: int | None) -> state.Incident:
    channel = _channel(actor)
    if incident_id is None:
        incident = state.latest_incident_in(services.store, channel)
        if incident is None:
            raise NotFoundError("no incident in this channel yet. Open one with `/incident open TITLE`.")
        return incident
    incident = state.get_incident(services.store, incident_id)
    if incident is None:
        raise NotFoundError(f"there is no incident #{incident_id}")
    if incident.channel != channel:
        raise NotAllowedError(f"incident #{incident_id} belongs to <#{incident.channel}>: run this there")
    return incident


def _audit(services: Services, kind: str, incident: state.Incident, actor: str | None, at: str, text: str,
           **detail) -> dict:
    return {"at": at, "kind": kind, "text": text, "database": incident.database, "channel": incident.channel,
            "actor": actor, "detail": {"incident_id": incident.id, **detail}}


def _clean(services: Services, text: str) -> str:
    return redact(text, services.secrets())


def execute_open(services: Services, request: OpenRequest, actor: Actor, reply: Reply) -> state.Incident:
    cfg = services.settings.incidents
    channel = _channel(actor)
    now = services.clock()
    started = resolve_at(request.at, cfg, now)
    title = _clean(services, request.title)
    text = f"Incident opened by <@{actor.user}>: {title} (SEV{request.severity}" + \
        (f", database {request.database})" if request.database else ")")
    try:
        incident = state.open_incident(services.store, channel, title, request.severity, request.database, actor.user,
                                       iso(now), iso(started), text)
    except state.IncidentAlreadyOpen as exc:
        raise IncidentStateError(f"incident #{exc.incident.id} ({exc.incident.title}) is already open in this channel: "
                                 "close it with `/incident close ROOT_CAUSE` before opening another.") from None
    message_id = reply.post(header_for(services, incident))
    state.set_header(services.store, incident.id, message_id)
    return state.get_incident(services.store, incident.id)


def execute_note(services: Services, request: NoteRequest, actor: Actor, reply: Reply) -> int:
    cfg = services.settings.incidents
    incident = _open_here(services, actor)
    at = iso(resolve_at(request.at, cfg, services.clock()))
    text = _clean(services, request.text)
    entry_id, _ = state.add_audited_entry(services.store, incident.id, at, "note", actor.user, text,
                                          _audit(services, "incident.note", incident, actor.user, at, text))
    notice = Notice(f":memo: Noted on incident #{incident.id} at {local(at, cfg.zone)} by <@{actor.user}>: {text}")
    if incident.header_message_id:
        reply.thread(incident.header_message_id, notice)
    else:
        reply.ephemeral(notice)
    return entry_id


def execute_check(services: Services, request: CheckRequest, actor: Actor, reply: Reply) -> bool:
    incident = _open_here(services, actor)
    at = iso(services.clock())
    name = dict(CHECKLIST)[request.step]
    how = _clean(services, request.note or "ticked by hand")
    text = f"Checklist: {name} ticked by <@{actor.user}>" + (f": {how}" if request.note else "")
    _, ticked = state.add_audited_entry(services.store, incident.id, at, "checklist.ticked", actor.user, text,
                                        _audit(services, "incident.checklist", incident, actor.user, at, text,
                                               step=request.step),
                                        step=(request.step, how))
    refresh_header(services, incident.id, reply)
    reply.ephemeral(Notice(f"{name} ticked on incident #{incident.id}." if ticked
                           else f"{name} was already ticked on incident #{incident.id}; noted on the timeline."))
    return ticked


def execute_status(services: Services, request: StatusRequest, actor: Actor, reply: Reply) -> IncidentHeader:
    incident = _chosen(services, actor, None)
    refresh_header(services, incident.id, reply)
    header = header_for(services, incident)
    reply.ephemeral(header)
    return header


def execute_close(services: Services, request: CloseRequest, actor: Actor, reply: Reply) -> state.Incident:
    cfg = services.settings.incidents
    incident = _open_here(services, actor)
    closed_at = iso(services.clock())
    root_cause = _clean(services, request.root_cause)

    def summarize(current: state.Incident) -> dict:
        return measure(current, cfg.rpo_hours, cfg.rto_hours(current.severity), closed_at)

    closed = state.close_incident(services.store, incident.id, actor.user, closed_at, root_cause, summarize,
                                  f"Incident closed by <@{actor.user}>. Root cause: {root_cause}")
    if closed is None:
        raise IncidentStateError(f"incident #{incident.id} was closed meanwhile")
    refresh_header(services, closed.id, reply)
    reply.post(CloseSummary(closed, cfg.zone, state.count_entries(services.store, closed.id)))
    try:
        _upload(services, closed, "md", "UTC", reply)
    except Exception:
        log.exception("could not upload the export of incident #%s", closed.id)
        reply.ephemeral(Notice(f"Incident #{closed.id} is closed, but its export could not be uploaded; "
                               f"try `/incident export {closed.id}`."))
    return closed


def execute_timeline(services: Services, request: TimelineRequest, actor: Actor, reply: Reply) -> TimelinePage:
    cfg = services.settings.incidents
    incident = _chosen(services, actor, request.incident_id)
    total = state.count_entries(services.store, incident.id)
    pages = max(1, math.ceil(total / cfg.page_size))
    if request.page > pages:
        raise UsageError(f"incident #{incident.id} has {pages} page{'s' if pages > 1 else ''} of {cfg.page_size} entries")
    entries = state.entries_page(services.store, incident.id, (request.page - 1) * cfg.page_size, cfg.page_size)
    page = TimelinePage(incident, tuple(entries), request.page, pages, total, cfg.zone)
    reply.ephemeral(page)
    return page


def execute_list(services: Services, request: ListRequest, actor: Actor, reply: Reply) -> IncidentList:
    cfg = services.settings.incidents
    result = IncidentList(_channel(actor), tuple(state.list_incidents(services.store, _channel(actor))), cfg.zone)
    reply.ephemeral(result)
    return result


def execute_export(services: Services, request: ExportRequest, actor: Actor, reply: Reply) -> tuple[str, int]:
    incident = _chosen(services, actor, request.incident_id)
    return _upload(services, incident, request.format, request.tz, reply)


def _upload(services: Services, incident: state.Incident, fmt: str, tz: str, reply: Reply) -> tuple[str, int]:
    cfg = services.settings.incidents
    filename, content, count = export_incident(services.store, incident, fmt, zone_named(tz), tz, cfg.rpo_hours,
                                               cfg.rto_hours(incident.severity))
    reply.upload_file(filename, content, f"Incident #{incident.id} timeline ({count:,} entries, times in {tz})")
    return filename, count


EXECUTORS = {
    OpenRequest: execute_open, NoteRequest: execute_note, StatusRequest: execute_status, CheckRequest: execute_check,
    CloseRequest: execute_close, TimelineRequest: execute_timeline, ListRequest: execute_list,
    ExportRequest: execute_export, HelpRequest: execute_help,
}


# ---------------------------------------------------------------- :stopwatch:


def stopwatch_emoji(settings) -> str:
    return settings.incidents.emoji


def slack_ts_time(ts: str | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(ts), UTC) if ts else None
    except (ValueError, OverflowError, OSError):
        return None


def handle_stopwatch(services: Services, event, reply: Reply) -> None:
    """A :stopwatch: on a message in a channel with an open incident puts the message on its timeline."""
    cfg = services.settings.incidents
    if event.emoji != cfg.emoji:
        return  # every reaction comes through here
    incident = state.open_incident_in(services.store, event.channel)
    if incident is None:
        return
    now = iso(services.clock())
    if event.added:
        posted = slack_ts_time(event.item_ts)
        at = iso(posted) if posted else now
        text = _clean(services, (event.item_text or "(message text unavailable)")[:MAX_TEXT])
        audit = _audit(services, "incident.message_added", incident, event.user, now,
                       f"<@{event.user}> put message {event.message_id} on the timeline: {text}",
                       message=event.message_id, author=event.item_author, posted_at=at)
        entry_id = state.add_marked_message(services.store, incident.id, event.message_id, at, event.item_author, text,
                                            event.user, audit)
        if entry_id is not None:
            reply.ephemeral(Notice(f":{cfg.emoji}: Added to incident #{incident.id}'s timeline at {local(at, cfg.zone)}."))
    else:
        audit = _audit(services, "incident.message_removed", incident, event.user, now,
                       f"<@{event.user}> took message {event.message_id} off the timeline", message=event.message_id)
        state.remove_marked_message(services.store, incident.id, event.message_id, event.user, audit)
