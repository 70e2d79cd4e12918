"""Incidents, timeline entries and the append-only audit log.

Timeline entries are ordered by when things happened (`at`), not when they were written down: a
backdated note or a :stopwatch: on an old message lands where it belongs. Reading a timeline is
paged or streamed, never loaded whole, so an incident with 100,000 entries stays cheap.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import sqlite_utils

from state.store import Store, utcnow_iso

OPEN, CLOSED = "open", "closed"


@dataclass(frozen=True)
class Incident:
    id: int
    channel: str
    database: str | None
    title: str
    severity: int
    status: str
    opened_by: str | None
    opened_at: str
    started_at: str
    closed_by: str | None = None
    closed_at: str | None = None
    root_cause: str | None = None
    header_message_id: str | None = None
    checklist: dict = field(default_factory=dict)  # step -> {"at", "by", "how"}
    recovery_backup_id: int | None = None
    recovery_point: str | None = None
    recovered_at: str | None = None
    summary: dict = field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        return self.status == OPEN


@dataclass(frozen=True)
class Entry:
    id: int
    incident_id: int
    at: str
    recorded_at: str
    kind: str
    actor: str | None
    text: str
    source_message_id: str | None
    audit_id: int | None
    detail: dict


class IncidentAlreadyOpen(Exception):
    def __init__(self, incident: Incident):
        super().__init__(f"incident #{incident.id} is open in {incident.channel}")
        self.incident = incident


def _incident(row: dict) -> Incident:
    values = dict(row)
    values["checklist"] = json.loads(values["checklist"] or "{}")
    values["summary"] = json.loads(values["summary"] or "{}")
    return Incident(**values)


def _entry(row) -> Entry:
    values = dict(row)
    values["detail"] = json.loads(values["detail"] or "{}")
    return Entry(**values)


# ---------------------------------------------------------------- audit log (append-only)


def append_audit(db: sqlite_utils.Database, at: str, kind: str, text: str, database: str | None = None,
                 channel: str | None = None, actor: str | None = None, detail: dict | None = None) -> int:
    """Append one audit row inside the caller's transaction; there is no update or delete."""
    cursor = db.execute(
        "INSERT INTO audit_log (at, recorded_at, kind, database, channel, actor, text, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [at, utcnow_iso(), kind, database, channel, actor, text, json.dumps(detail or {}, default=str)],
    )
    return cursor.lastrowid


def audit_rows(store: Store, limit: int = 100) -> list[dict]:
    """Newest first."""
    with store.db() as db:
        return [dict(r, detail=json.loads(r["detail"] or "{}"))
                for r in db.query("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", [limit])]


# ---------------------------------------------------------------- incidents


def open_incident(store: Store, channel: str, title: str, severity: int, database: str | None, opened_by: str | None,
                  opened_at: str, started_at: str, audit_text: str) -> Incident:
    """Insert the channel's open incident with its first entry and audit row; IncidentAlreadyOpen otherwise."""
    with store.immediate() as db:
        try:
            cursor = db.execute(
                "INSERT INTO incidents (channel, database, title, severity, status, opened_by, opened_at, started_at)"
                " VALUES (?, ?, ?, ?, 'open', ?, ?, ?)",
                [channel, database, title, severity, opened_by, opened_at, started_at],
            )
        except sqlite3.IntegrityError:
            row = next(db.query("SELECT * FROM incidents WHERE channel = ? AND status = 'open'", [channel]))
            raise IncidentAlreadyOpen(_incident(row)) from None
        incident_id = cursor.lastrowid
        audit_id = append_audit(db, opened_at, "incident.opened", audit_text, database, channel, opened_by,
                                {"incident_id": incident_id, "severity": severity})
        add_entry(db, incident_id, started_at, "incident.opened", opened_by, audit_text, audit_id=audit_id)
        tick(db, incident_id, "identify", opened_at, opened_by, "opened the incident")
    return get_incident(store, incident_id)


def get_incident(store: Store, incident_id: int) -> Incident | None:
    with store.db() as db:
        rows = list(db.query("SELECT * FROM incidents WHERE id = ?", [incident_id]))
    return _incident(rows[0]) if rows else None


def open_incident_in(store: Store, channel: str) -> Incident | None:
    with store.db() as db:
        rows = list(db.query("SELECT * FROM incidents WHERE channel = ? AND status = 'open'", [channel]))
    return _incident(rows[0]) if rows else None


def latest_incident_in(store: Store, channel: str) -> Incident | None:
    """The open incident of the channel, else its most recently opened one."""
    with store.db() as db:
        rows = list(db.query("SELECT * FROM incidents WHERE channel = ? ORDER BY status = 'open' DESC, id DESC LIMIT 1",
                             [channel]))
    return _incident(rows[0]) if rows else None


def list_incidents(store: Store, channel: str, limit: int = 20) -> list[Incident]:
    with store.db() as db:
        return [_incident(r) for r in db.query("SELECT * FROM incidents WHERE channel = ? ORDER BY id DESC LIMIT ?",
                                               [channel, limit])]


def matching_open_incidents(db: sqlite_utils.Database, database: str | None, channel: str | None) -> list[Incident]:
    """Open incidents about `database` or held in `channel`."""
    rows = db.query("SELECT * FROM incidents WHERE status = 'open' AND ((database IS NOT NULL AND database = ?) OR channel = ?)"
                    " ORDER BY id", [database, channel])
    return [_incident(r) for r in rows]


def set_header(store: Store, incident_id: int, message_id: str | None) -> None:
    with store.db() as db:
        db.execute("UPDATE incidents SET header_message_id = ? WHERE id = ?", [message_id, incident_id])


def tick(db: sqlite_utils.Database, incident_id: int, step: str, at: str, by: str | None, how: str,
         overwrite: bool = False) -> bool:
    """Tick a checklist step inside the caller's transaction; True when it was not ticked yet."""
    row = next(db.query("SELECT checklist FROM incidents WHERE id = ?", [incident_id]))
    checklist = json.loads(row["checklist"] or "{}")
    if step in checklist and not overwrite:
        return False
    checklist[step] = {"at": at, "by": by, "how": how}
    db.execute("UPDATE incidents SET checklist = ? WHERE id = ?", [json.dumps(checklist), incident_id])
    return True


def set_recovery(db: sqlite_utils.Database, incident_id: int, *, backup_id: int | None = None,
                 recovery_point: str | None = None, recovered_at: str | None = None) -> None:
    """Record the backup used (and its created_at, the recovery point) and when recovery was verified."""
    if backup_id is not None or recovery_point is not None:
        db.execute("UPDATE incidents SET recovery_backup_id = COALESCE(?, recovery_backup_id), "
                   "recovery_point = COALESCE(?, recovery_point) WHERE id = ?", [backup_id, recovery_point, incident_id])
    if recovered_at is not None:
        db.execute("UPDATE incidents SET recovered_at = ? WHERE id = ? AND recovered_at IS NULL", [recovered_at, incident_id])


def close_incident(store: Store, incident_id: int, closed_by: str | None, closed_at: str, root_cause: str,
                   summarize: Callable[[Incident], dict], audit_text: str) -> Incident | None:
    """Close an open incident (the first close wins); returns it, or None when it was not open.

    `summarize` measures the incident as it stands inside the closing transaction."""
    with store.immediate() as db:
        rows = list(db.query("SELECT * FROM incidents WHERE id = ? AND status = 'open'", [incident_id]))
        if not rows:
            return None
        incident = _incident(rows[0])
        summary = summarize(incident)
        audit_id = append_audit(db, closed_at, "incident.closed", audit_text, incident.database, incident.channel,
                                closed_by, {"incident_id": incident_id, **summary})
        add_entry(db, incident_id, closed_at, "incident.closed", closed_by, audit_text, audit_id=audit_id)
        tick(db, incident_id, "document", closed_at, closed_by, "closed with a root cause")
        db.execute("UPDATE incidents SET status = 'closed', closed_by = ?, closed_at = ?, root_cause = ?, summary = ? "
                   "WHERE id = ?", [closed_by, closed_at, root_cause, json.dumps(summary), incident_id])
    return get_incident(store, incident_id)


# ---------------------------------------------------------------- timeline entries


def add_entry(db: sqlite_utils.Database, incident_id: int, at: str, kind: str, actor: str | None, text: str,
              source_message_id: str | None = None, audit_id: int | None = None, detail: dict | None = None) -> int:
    cursor = db.execute(
        "INSERT INTO incident_entries (incident_id, at, recorded_at, kind, actor, text, source_message_id, audit_id, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [incident_id, at, utcnow_iso(), kind, actor, text, source_message_id, audit_id,
         json.dumps(detail or {}, default=str)],
    )
    return cursor.lastrowid


def add_audited_entry(store: Store, incident_id: int, at: str, kind: str, actor: str | None, text: str, audit: dict,
                      step: tuple[str, str] | None = None) -> tuple[int, bool]:
    """A note or a hand-ticked step: entry, audit row and checklist in one transaction.

    Returns (entry id, whether `step` was newly ticked)."""
    with store.immediate() as db:
        audit_id = append_audit(db, **audit)
        entry_id = add_entry(db, incident_id, at, kind, actor, text, audit_id=audit_id)
        ticked = tick(db, incident_id, step[0], at, actor, step[1]) if step else False
    return entry_id, ticked


def add_marked_message(store: Store, incident_id: int, message_id: str, at: str, author: str | None, text: str,
                       reactor: str, audit: dict) -> int | None:
    """A :stopwatch:-marked message joins the timeline once; each further reactor is remembered.

    Returns the new entry's id, or None when the message was already on the timeline."""
    with store.immediate() as db:
        rows = list(db.query("SELECT id, detail FROM incident_entries WHERE incident_id = ? AND source_message_id = ?",
                             [incident_id, message_id]))
        if rows:
            detail = json.loads(rows[0]["detail"] or "{}")
            reactors = set(detail.get("reactors", [])) | {reactor}
            db.execute("UPDATE incident_entries SET detail = ? WHERE id = ?",
                       [json.dumps({**detail, "reactors": sorted(reactors)}), rows[0]["id"]])
            return None
        audit_id = append_audit(db, **audit)
        return add_entry(db, incident_id, at, "message", author, text, source_message_id=message_id, audit_id=audit_id,
                         detail={"reactors": [reactor], "marked_by": reactor})


def remove_marked_message(store: Store, incident_id: int, message_id: str, reactor: str, audit: dict) -> bool | None:
    """The reactor takes their :stopwatch: back; the entry goes when nobody's is left.

    Returns True when the entry was removed, False when others still mark it, None when there was none."""
    with store.immediate() as db:
        rows = list(db.query("SELECT id, detail FROM incident_entries WHERE incident_id = ? AND source_message_id = ?",
                             [incident_id, message_id]))
        if not rows:
            return None
        detail = json.loads(rows[0]["detail"] or "{}")
        reactors = set(detail.get("reactors", [])) - {reactor}
        if reactors:
            db.execute("UPDATE incident_entries SET detail = ? WHERE id = ?",
                       [json.dumps({**detail, "reactors": sorted(reactors)}), rows[0]["id"]])
            return False
        db.execute("DELETE FROM incident_entries WHERE id = ?", [rows[0]["id"]])
        append_audit(db, **audit)
        return True


def count_entries(store: Store, incident_id: int) -> int:
    with store.db() as db:
        return db.execute("SELECT COUNT(*) FROM incident_entries WHERE incident_id = ?", [incident_id]).fetchone()[0]


def entries_page(store: Store, incident_id: int, offset: int, limit: int) -> list[Entry]:
    with store.db() as db:
        return [_entry(r) for r in db.query(
            "SELECT * FROM incident_entries WHERE incident_id = ? ORDER BY at, id LIMIT ? OFFSET ?",
            [incident_id, limit, offset])]


def iter_entries(store: Store, incident_id: int) -> Iterator[Entry]:
    """Every entry in time order, streamed from SQLite one row at a time."""
    with store.db() as db:
        for row in db.query("SELECT * FROM incident_entries WHERE incident_id = ? ORDER BY at, id", [incident_id]):
            yield _entry(row)
