"""Incidents, their timelines, and the append-only audit log.

One open incident per channel is a partial unique index, so opening is a single INSERT that wins
or fails. The audit log refuses UPDATE and DELETE at the SQLite level, whatever the code does.
"""

SQL = """
CREATE TABLE incidents (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    database TEXT,
    title TEXT NOT NULL,
    severity INTEGER NOT NULL,
    status TEXT NOT NULL,
    opened_by TEXT,
    opened_at TEXT NOT NULL,
    started_at TEXT NOT NULL,
    closed_by TEXT,
    closed_at TEXT,
    root_cause TEXT,
    header_message_id TEXT,
    checklist TEXT NOT NULL DEFAULT '{}',
    recovery_backup_id INTEGER,
    recovery_point TEXT,
    recovered_at TEXT,
    summary TEXT
);
CREATE UNIQUE INDEX incidents_one_open_per_channel ON incidents (channel) WHERE status = 'open';
CREATE INDEX incidents_open_by_database ON incidents (database) WHERE status = 'open';
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    database TEXT,
    channel TEXT,
    actor TEXT,
    text TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX audit_log_by_time ON audit_log (at);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TABLE incident_entries (
    id INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT,
    text TEXT NOT NULL,
    source_message_id TEXT,
    audit_id INTEGER REFERENCES audit_log (id),
    detail TEXT
);
CREATE INDEX incident_entries_by_time ON incident_entries (incident_id, at, id);
CREATE UNIQUE INDEX incident_entries_one_per_message ON incident_entries (incident_id, source_message_id)
    WHERE source_message_id IS NOT NULL
"""
