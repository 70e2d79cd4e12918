"""Legal holds: `/backup keep ID --reason TEXT`, approved by approvers' reactions like a restore.

A hold is the one thing that keeps a backup past `max_age_days`. It is a row with its reason, who
asked, its votes and when it became active; a status moves only by a conditional UPDATE, so two
approvals arriving together activate it once. Holds are never deleted: they are the audit.
"""

SQL = """
CREATE TABLE legal_holds (
    id INTEGER PRIMARY KEY,
    backup_id INTEGER NOT NULL,
    database TEXT NOT NULL,
    reason TEXT NOT NULL,
    requester TEXT NOT NULL,
    channel TEXT,
    message_id TEXT,
    status TEXT NOT NULL,
    required_approvals INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    decided_at TEXT,
    decided_by TEXT
);
CREATE INDEX legal_holds_by_backup ON legal_holds (backup_id, status);
CREATE INDEX legal_holds_by_message ON legal_holds (channel, message_id);
CREATE TABLE legal_hold_votes (
    hold_id INTEGER NOT NULL REFERENCES legal_holds (id),
    user TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (hold_id, user)
)
"""
