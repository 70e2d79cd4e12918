"""What /incident shows: the header the bot keeps up to date, timeline pages, lists, the close summary.

Also the measurements (time to recovery, data-loss window) so the summary, the header and the
exports compute them one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo

from commands.units import human_duration
from state.incidents import Entry, Incident

CHECKLIST = (
    ("identify", "Identify"),
    ("select_backup", "Select backup"),
    ("checkpoint", "Checkpoint"),
    ("restore", "Restore"),
    ("verify", "Verify"),
    ("monitor", "Monitor"),
    ("document", "Document"),
)
STEP_NAMES = dict(CHECKLIST)
SEVERITY = {1: "SEV1 critical", 2: "SEV2 major", 3: "SEV3 minor", 4: "SEV4 low"}
ENTRY_TEXT_LIMIT = 300


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def local(value: str | None, zone: tzinfo, with_date: bool = True) -> str:
    """An ISO UTC time as the reader's zone shows it: `2026-11-28 15:02 CET`."""
    moment = parse_time(value)
    if moment is None:
        return "—"
    moment = moment.astimezone(zone)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z" if with_date else "%H:%M:%S %Z")


def measure(incident: Incident, rpo_hours: float, rto_hours: float, closed_at: str | None = None) -> dict:
    """Time to recovery (opened → restore verified) and data-loss window (start − recovery point), with targets."""
    opened = parse_time(incident.opened_at)
    started = parse_time(incident.started_at) or opened
    recovered = parse_time(incident.recovered_at)
    point = parse_time(incident.recovery_point)
    closed = parse_time(closed_at or incident.closed_at)
    out: dict = {"rto_target_hours": rto_hours, "rpo_target_hours": rpo_hours,
                 "recovery_backup_id": incident.recovery_backup_id, "recovery_point": incident.recovery_point,
                 "recovered_at": incident.recovered_at, "time_to_recovery_s": None, "rto_met": None,
                 "data_loss_window_s": None, "rpo_met": None,
                 "duration_s": (closed - opened).total_seconds() if closed else None}
    if recovered:
        ttr = (recovered - opened).total_seconds()
        out["time_to_recovery_s"] = ttr
        out["rto_met"] = ttr <= rto_hours * 3600
    if point:
        window = (started - point).total_seconds()
        out["data_loss_window_s"] = window
        out["rpo_met"] = window <= rpo_hours * 3600
    return out


SLACK_MARKS = {True: ":white_check_mark:", False: ":x:", None: ":grey_question:"}
PLAIN_MARKS = {True: "[met]", False: "[MISSED]", None: "[not measured]"}


def measurement_lines(m: dict, marks: dict = SLACK_MARKS) -> list[str]:
    lines = []
    rto = _hours(m["rto_target_hours"])
    if m["time_to_recovery_s"] is None:
        lines.append(f"{marks[None]} Time to recovery: not measured (no verified restore) · target {rto}")
    else:
        mark = marks[bool(m["rto_met"])]
        lines.append(f"{mark} Time to recovery: {human_duration(m['time_to_recovery_s'])} (opened → restore verified)"
                     f" · target {rto}{'' if m['rto_met'] else ' — missed'}")
    rpo = _hours(m["rpo_target_hours"])
    window = m["data_loss_window_s"]
    if window is None:
        lines.append(f"{marks[None]} Data-loss window: not measured (no backup was restored) · target {rpo}")
    else:
        mark = marks[bool(m["rpo_met"])]
        shown = human_duration(window) if window >= 0 else f"none ({human_duration(-window)} of the incident is in the backup)"
        source = (f"backup #{m['recovery_backup_id']} taken {m['recovery_point']}" if m["recovery_backup_id"] is not None
                  else f"recovery point {m['recovery_point']}")  # a point-in-time restore's target time
        lines.append(f"{mark} Data-loss window: {shown} (incident start → {source}) · target {rpo}"
                     f"{'' if m['rpo_met'] else ' — missed'}")
    return lines


def _hours(hours: float) -> str:
    return f"{hours:g} h"


def checklist_lines(incident: Incident, zone: tzinfo) -> list[str]:
    lines = []
    for number, (step, name) in enumerate(CHECKLIST, 1):
        done = incident.checklist.get(step)
        if done:
            by = f" by <@{done['by']}>" if done.get("by") else ""
            lines.append(f":white_check_mark: {number}. {name} — {local(done['at'], zone, with_date=False)}{by}"
                         f" ({done.get('how', '')})")
        else:
            lines.append(f":white_large_square: {number}. {name}")
    return lines


@dataclass(frozen=True)
class IncidentHeader:
    """The message `open` posts and the bot edits as the incident moves."""

    incident: Incident
    zone: tzinfo
    rpo_hours: float
    rto_hours: float
    emoji: str = "stopwatch"

    def text(self) -> str:
        i = self.incident
        icon = ":rotating_light:" if i.is_open else ":white_check_mark:"
        opener = f"<@{i.opened_by}>" if i.opened_by else "backupbot (an alarm)"
        lines = [f"{icon} Incident #{i.id} · {SEVERITY.get(i.severity, i.severity)} · {i.status.upper()} — {i.title}",
                 f"Database: {i.database or 'any (events in this channel)'} · opened by {opener}"]
        lines.append("Key times: " + " · ".join(f"{name} {local(value, self.zone)}" for name, value in self.key_times()))
        lines.append("DR checklist:")
        lines.extend(checklist_lines(i, self.zone))
        if i.is_open:
            lines.append(f"Add a message to the timeline with :{self.emoji}:, a note with `/incident note TEXT`; "
                         f"see it with `/incident timeline {i.id}`.")
        else:
            lines.append(f"Root cause: {i.root_cause}")
            lines.extend(measurement_lines(i.summary or measure(i, self.rpo_hours, self.rto_hours)))
        return "\n".join(lines)

    def key_times(self) -> list[tuple[str, str | None]]:
        i = self.incident
        times = [("started", i.started_at)]
        if i.opened_at != i.started_at:
            times.append(("opened", i.opened_at))
        for step in ("checkpoint", "restore", "verify"):
            if step in i.checklist:
                times.append(({"verify": "verified", "restore": "restored"}.get(step, step), i.checklist[step]["at"]))
        times.append(("closed", i.closed_at))
        return times


def entry_line(entry: Entry, zone: tzinfo, limit: int = ENTRY_TEXT_LIMIT) -> str:
    text = " ".join(entry.text.split())
    if len(text) > limit:
        text = text[:limit] + "…"
    who = f"<@{entry.actor}>" if entry.actor else "bot"
    return f"`{local(entry.at, zone)}` {KIND_ICONS.get(entry.kind.split('.')[0], '•')} {who}: {text}"


KIND_ICONS = {"incident": ":rotating_light:", "note": ":memo:", "message": ":stopwatch:", "backup": ":floppy_disk:",
              "restore": ":leftwards_arrow_with_hook:", "approval": ":ballot_box_with_check:", "health": ":stethoscope:",
              "db_health": ":stethoscope:", "drill": ":fire_engine:", "checklist": ":ballot_box_with_check:"}


@dataclass(frozen=True)
class TimelinePage:
    incident: Incident
    entries: tuple[Entry, ...]
    page: int
    pages: int
    total: int
    zone: tzinfo

    def text(self) -> str:
        i = self.incident
        lines = [f"Timeline of incident #{i.id} ({i.status}) — {i.title} · {self.total:,} entries · "
                 f"page {self.page:,} of {self.pages:,}"]
        if not self.entries:
            lines.append("No entries on this page.")
        lines.extend(entry_line(e, self.zone) for e in self.entries)
        if self.page < self.pages:
            lines.append(f"Next: `/incident timeline {i.id} --page {self.page + 1}` · "
                         f"everything: `/incident export {i.id}`")
        return "\n".join(lines)


@dataclass(frozen=True)
class IncidentList:
    channel: str
    incidents: tuple[Incident, ...]
    zone: tzinfo

    def text(self) -> str:
        if not self.incidents:
            return "No incidents in this channel yet. Open one with `/incident open TITLE`."
        lines = ["Incidents in this channel (newest first):"]
        for i in self.incidents:
            lines.append(f"#{i.id} · {i.status} · SEV{i.severity} · {i.database or 'any database'} · "
                         f"opened {local(i.opened_at, self.zone)}" + (f" · closed {local(i.closed_at, self.zone)}"
                                                                      if i.closed_at else "") + f" · {i.title}")
        return "\n".join(lines)


@dataclass(frozen=True)
class CloseSummary:
    incident: Incident
    zone: tzinfo
    entries: int

    def text(self) -> str:
        i = self.incident
        m = i.summary
        lines = [f":white_check_mark: Incident #{i.id} closed by <@{i.closed_by}> — {i.title}",
                 f"Root cause: {i.root_cause}",
                 f"Duration: {human_duration(m.get('duration_s') or 0)} (opened {local(i.opened_at, self.zone)}, "
                 f"closed {local(i.closed_at, self.zone)}) · {self.entries:,} timeline entries"]
        lines.extend(measurement_lines(m))
        missing = [name for step, name in CHECKLIST if step not in i.checklist]
        lines.append("DR checklist: " + ("all seven steps done" if not missing else "not done: " + ", ".join(missing)))
        return "\n".join(lines)
