SQL = """
CREATE TABLE restore_requests (
    id INTEGER PRIMARY KEY,
    plan TEXT NOT NULL,
    plan_hash TEXT NOT NULL,
    database TEXT NOT NULL,
    requester TEXT NOT NULL,
    channel TEXT,
    message_id TEXT,
    status TEXT NOT NULL,
    needs_approval INTEGER NOT NULL,
    required_approvals INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    decided_at TEXT,
    job_id INTEGER REFERENCES jobs (id),
    result TEXT
);
CREATE INDEX restore_requests_by_message ON restore_requests (message_id);
CREATE TABLE restore_votes (
    request_id INTEGER NOT NULL REFERENCES restore_requests (id),
    user TEXT NOT NULL,
    vote TEXT NOT NULL,
    active INTEGER NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (request_id, user, vote)
);
CREATE TABLE restore_notices (
    request_id INTEGER NOT NULL REFERENCES restore_requests (id),
    user TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (request_id, user, reason)
)
"""
