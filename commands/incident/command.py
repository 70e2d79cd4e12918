"""/incident: open, note, check, close, timeline, list, export; the :stopwatch: reaction.

One open incident per channel (a unique index makes opening atomic). `open` posts a header the
bot edits as the incident moves; backups, restores, approvals and health alerts land on the
timeline through commands.incident.audit.record_event.

Permissions: anyone may open an incident, add notes and read or export it: declaring an incident
must never wait for an admin, and none of it touches a database. Closing needs an operator (with
no [access] operators, that is everyone): it ends automatic capture and freezes the recovery
measurements, so the people trusted to run restores are the ones who declare recovery done.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from commands.chat.access import ANYONE, OPERATOR
from commands.chat.args import int_in_range, parse_args
from commands.chat.context import Actor, Services
from commands.chat.reply import Notice, Reply
from commands.errors import BackupbotError, NotAllowedError, NotFoundError, UsageError
from commands.incident.export import FORMATS, export_incident
from commands.incident.header import header_for, refresh_header
from commands.incident.messages import (
    CHECKLIST,
    CloseSummary,
    IncidentHeader,
    IncidentList,
    TimelinePage,
    local,
    measure,
)
from commands.redact import redact
from commands.settings_incidents import IncidentSettings, zone_named
from state import incidents as state
from state.store import iso

log = logging.getLogger(__name__)

USAGE = """Usage:
`/incident open TITLE [--db DB] [--sev 1-4] [--at HH:MM]`  (one open incident per channel; --at: when it started)
`/incident note [--at HH:MM] TEXT`
`/incident status`
`/incident check STEP [NOTE]`  (identify, select-backup, checkpoint, restore, verify, monitor, document)
`/incident close ROOT_CAUSE`
`/incident timeline [ID] [--page N]`
`/incident list`
`/incident export [ID] [--format md|csv] [--tz ZONE]`
`/incident help`
React with :stopwatch: on any message in the channel to put it on the timeline; remove the reaction to take it off."""

MAX_TITLE = 200
QUOTE_PAIRS = {('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019")}
MAX_TEXT = 3000
STEPS = {step.replace("_", "-"): step for step, _ in CHECKLIST} | {step: step for step, _ in CHECKLIST}


class IncidentStateError(BackupbotError):
    """The channel has (or has no) open incident, unlike what the command needs."""


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class OpenRequest:
    title: str
    database: str | None = None
    severity: int = 2
    at: str | None = None
    permission = ANYONE


@dataclass(frozen=True)
class NoteRequest:
    text: str
    at: str | None = None
    permission = ANYONE


@dataclass(frozen=True)
class StatusRequest:
    permission = ANYONE


@dataclass(frozen=True)
class CheckRequest:
    step: str
    note: str | None = None
    permission = ANYONE


@dataclass(frozen=True)
class CloseRequest:
    root_cause: str
    permission = OPERATOR


@dataclass(frozen=True)
class TimelineRequest:
    incident_id: int | None = None
    page: int = 1
    permission = ANYONE


@dataclass(frozen=True)
class ListRequest:
    permission = ANYONE


@dataclass(frozen=True)
class ExportRequest:
    incident_id: int | None = None
    format: str = "md"
    tz: str = "UTC"
    permission = ANYONE


@dataclass(frozen=True)
class HelpRequest:
    permission = ANYONE


# ---------------------------------------------------------------- parsing


def parse_incident(text: str, services: Services):
    """Turn `/incident` text into a typed request; raise UsageError with the usage otherwise."""
    if len(text) > MAX_TEXT + 100:
        raise UsageError(f"the command is too long ({len(text)} characters, at most {MAX_TEXT})\n{USAGE}")
    text = text.replace("\u2014", "--")  # Slack turns -- into an em dash on some clients
    words = text.split(None, 1)
    sub = words[0].lower() if words else ""
    rest = words[1].strip() if len(words) > 1 else ""
    if sub in ("", "help", "-h", "--help"):
        return HelpRequest()
    if sub == "open":
        flags, title = _free_text(rest, {"--db", "--sev", "--at"})
        title = _required(title, "a title", "open")[:MAX_TITLE]
        database = services.settings.database(flags["--db"]).name if "--db" in flags else None
        severity = _int(flags.get("--sev", "2"), "--sev", 1, 4)
        return OpenRequest(title=title, database=database, severity=severity, at=_check_at(flags.get("--at")))
    if sub == "note":
        flags, note = _free_text(rest, {"--at"}, leading_only=True)
        return NoteRequest(text=_required(note, "the note's text", "note"), at=_check_at(flags.get("--at")))
    if sub == "status":
        _no_words(rest, "status")
        return StatusRequest()
    if sub == "check":
        step_word, _, note = rest.partition(" ")
        step = STEPS.get(step_word.lower())
        if step is None:
            names = ", ".join(s.replace("_", "-") for s, _ in CHECKLIST)
            raise UsageError(f"unknown checklist step {step_word[:40]!r} (steps: {names})\n{USAGE}")
        return CheckRequest(step=step, note=note.strip() or None)
    if sub == "close":
        return CloseRequest(root_cause=_required(rest, "the root cause", "close")[:MAX_TEXT])
    if sub == "timeline":
        args = parse_args(rest, {"--page": "int"}, USAGE)
        return TimelineRequest(incident_id=_incident_id(args.words),
                               page=int_in_range(args.flags.get("--page", 1), "--page", 1, 1_000_000, USAGE))
    if sub == "list":
        _no_words(rest, "list")
        return ListRequest()
    if sub == "export":
        args = parse_args(rest, {"--format": "str", "--tz": "str"}, USAGE)
        fmt = str(args.flags.get("--format", "md")).lower().lstrip(".")
        fmt = {"markdown": "md"}.get(fmt, fmt)
        if fmt not in FORMATS:
            raise UsageError(f"unknown export format {fmt[:20]!r} (md or csv)\n{USAGE}")
        tz = str(args.flags.get("--tz", "UTC"))
        zone_named(tz)
        return ExportRequest(incident_id=_incident_id(args.words), format=fmt, tz=tz)
    raise UsageError(f"unknown /incident subcommand {sub[:40]!r}\n{USAGE}")


def _free_text(text: str, flags: set[str], leading_only: bool = False) -> tuple[dict[str, str], str]:
    """Flags with one value each, the rest kept as typed (apostrophes and all: no shell quoting)."""
    found: dict[str, str] = {}
    words = text.split(" ")
    rest: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, inline = word.partition("=")
        if name in flags and (not leading_only or not [w for w in rest if w]):
            if name in found:
                raise UsageError(f"{name} given twice\n{USAGE}")
            if eq:
                value = inline
            else:
                i += 1
                while i < len(words) and not words[i]:
                    i += 1
                value = words[i] if i < len(words) else ""
            if not value or value.startswith("--"):
                raise UsageError(f"{name} needs a value\n{USAGE}")
            found[name] = value
        elif word.startswith("--") and len(word) > 2 and not leading_only and not rest:
            raise UsageError(f"unknown option {word[:40]!r}\n{USAGE}")
        else:
            rest.append(word)
        i += 1
    value = " ".join(rest).strip()
    if len(value) >= 2 and (value[0], value[-1]) in QUOTE_PAIRS:
        value = value[1:-1].strip()
    return found, value


def _required(value: str, what: str, sub: str) -> str:
    if not value.strip():
        raise UsageError(f"`/incident {sub}` needs {what}\n{USAGE}")
    if len(value) > MAX_TEXT:
        raise UsageError(f"{what} is at most {MAX_TEXT} characters")
    return value.strip()


def _int(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{name} needs a whole number from {low} to {high}, got {value[:20]!r}\n{USAGE}") from None
    return int_in_range(number, name, low, high, USAGE)


def _no_words(rest: str, sub: str) -> None:
    if rest:
        raise UsageError(f"`/incident {sub}` takes no arguments, got {rest[:40]!r}\n{USAGE}")


def _incident_id(words: list[str]) -> int | None:
    if not words:
        return None
    if len(words) > 1 or not re.fullmatch(r"#?\d{1,9}", words[0]):
        raise UsageError(f"expected an incident number like 3 or #3, got {' '.join(words)[:40]!r}\n{USAGE}")
    return int(words[0].lstrip("#"))


AT_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def _check_at(value: str | None) -> str | None:
    if value is None:
        return None
    if AT_RE.match(value) or _iso_or_none(value):
        return value
    raise UsageError(f"--at takes HH:MM (or YYYY-MM-DDTHH:MM), got {value[:30]!r}\n{USAGE}")


def _iso_or_none(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def resolve_at(value: str | None, cfg: IncidentSettings, now: datetime) -> datetime:
    """`--at 14:05` is the last 14:05 (in the configured zone) at or before now."""
    if value is None:
        return now
    zone = cfg.zone
    match = AT_RE.match(value)
    if match:
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise UsageError(f"--at {value!r} is not a time of day")
        today = now.astimezone(zone)
        moment = today.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if moment > today:
            moment -= timedelta(days=1)
        return moment.astimezone(UTC)
    moment = _iso_or_none(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    if moment > now + timedelta(minutes=1):
        raise UsageError(f"--at {value} is in the future")
    return moment.astimezone(UTC)


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


def execute_help(services: Services, request: HelpRequest, actor: Actor, reply: Reply) -> None:
    reply.ephemeral(Notice(USAGE))


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
