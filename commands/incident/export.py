"""An incident as a Markdown or CSV file, times in the reader's zone.

Rows are streamed from SQLite into a spooled temporary file (memory up to 1 MB, disk beyond), so
an incident with 100,000 entries costs one pass and about the file's size once, when it is read
back for the upload.
"""

from __future__ import annotations

import csv
import io
import re
import tempfile
from datetime import datetime, tzinfo

from commands.incident.messages import CHECKLIST, PLAIN_MARKS, SEVERITY, local, measure, measurement_lines
from state.incidents import Entry, Incident, count_entries, iter_entries

FORMATS = ("md", "csv")
SPOOL_MAX = 1 << 20
CSV_COLUMNS = ("entry", "time", "time_utc", "kind", "actor", "text", "source_message", "audit_id")
MENTION_RE = re.compile(r"<([@#!]?)([^<>|\s]+)(?:\|([^<>]*))?>")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_incident(store, incident: Incident, fmt: str, zone: tzinfo, zone_name: str, rpo_hours: float,
                    rto_hours: float) -> tuple[str, bytes, int]:
    """Return (filename, content, number of timeline entries)."""
    total = count_entries(store, incident.id)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX, mode="w+b") as spool:
        out = io.TextIOWrapper(spool, encoding="utf-8", newline="")
        entries = iter_entries(store, incident.id)
        if fmt == "csv":
            write_csv(out, entries, zone)
        else:
            write_markdown(out, incident, entries, total, zone, zone_name, rpo_hours, rto_hours)
        out.flush()
        out.detach()
        spool.seek(0)
        content = spool.read()
    return f"incident-{incident.id}-timeline.{fmt}", content, total


def _stamp(value: str, zone: tzinfo) -> str:
    return datetime.fromisoformat(value).astimezone(zone).isoformat(timespec="seconds")


def write_csv(out, entries, zone: tzinfo) -> None:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        writer.writerow([e.id, _stamp(e.at, zone), e.at, e.kind, _cell(e.actor or ""), _cell(plain_mentions(e.text)),
                         e.source_message_id or "", e.audit_id or ""])


def _cell(value: str) -> str:
    """A spreadsheet must not run a message as a formula."""
    return "'" + value if value.startswith(FORMULA_START) else value


def plain_mentions(text: str) -> str:
    """Slack's <@U123>, <#C123|name> and <https://x|label> as a reader of the file expects them."""
    def one(m: re.Match) -> str:
        if m[1] in ("@", "#"):
            return m[1] + (m[3] or m[2])
        if m[1] == "!" or not m[3]:
            return m[3] or m[2]
        return f"{m[3]} ({m[2]})"

    return MENTION_RE.sub(one, text)


def _md(value: str | None) -> str:
    text = plain_mentions(value or "").replace("\\", "\\\\").replace("|", "\\|")
    return "<br>".join(line.strip() for line in text.splitlines()) or " "


def write_markdown(out, incident: Incident, entries, total: int, zone: tzinfo, zone_name: str,
                   rpo_hours: float, rto_hours: float) -> None:
    i = incident
    out.write(f"# Incident #{i.id}: {_md(i.title)}\n\n")
    facts = [
        ("Status", i.status),
        ("Severity", SEVERITY.get(i.severity, str(i.severity))),
        ("Database", i.database or "any (events in the channel)"),
        ("Channel", i.channel),
        ("Started", local(i.started_at, zone)),
        ("Opened", f"{local(i.opened_at, zone)} by {i.opened_by}"),
        ("Closed", f"{local(i.closed_at, zone)} by {i.closed_by}" if i.closed_at else "still open"),
        ("Root cause", _md(i.root_cause) if i.root_cause else "not closed yet"),
        ("Times in", zone_name),
    ]
    out.writelines(f"- **{name}:** {value}\n" for name, value in facts)
    out.write("\n## Recovery measurements\n\n")
    m = i.summary or measure(i, rpo_hours, rto_hours)
    out.writelines(f"- {line}\n" for line in measurement_lines(m, PLAIN_MARKS))
    out.write("\n## DR checklist\n\n")
    for number, (step, name) in enumerate(CHECKLIST, 1):
        done = i.checklist.get(step)
        if done:
            out.write(f"- [x] {number}. {name}: {local(done['at'], zone)} by {done.get('by') or 'bot'} "
                      f"({_md(done.get('how'))})\n")
        else:
            out.write(f"- [ ] {number}. {name}\n")
    out.write(f"\n## Timeline ({total:,} entries)\n\n")
    out.write(f"| Time ({zone_name}) | Kind | Who | What |\n|---|---|---|---|\n")
    for e in entries:
        out.write(_markdown_row(e, zone))


def _markdown_row(e: Entry, zone: tzinfo) -> str:
    what = _md(e.text)
    if e.source_message_id:
        what += f" (message {e.source_message_id})"
    return f"| {_stamp(e.at, zone)} | {e.kind} | {_md(e.actor or 'bot')} | {what} |\n"
