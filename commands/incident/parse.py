"""/incident's text into a typed request: the request types, the usage, and what `--at` means.

`open` and `note` take free text with flags around it, read word by word and never shell-quoted
(an apostrophe in a title is just an apostrophe), so they do not go through commands.chat.args,
which splits like a shell; the other subcommands do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from commands.chat.access import ANYONE, OPERATOR
from commands.chat.args import int_in_range, parse_args
from commands.chat.context import Services
from commands.chat.help import HelpRequest
from commands.errors import UsageError
from commands.incident.export import FORMATS
from commands.incident.messages import CHECKLIST
from commands.settings.incidents import IncidentSettings, zone_named

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
        return HelpRequest(USAGE)
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
