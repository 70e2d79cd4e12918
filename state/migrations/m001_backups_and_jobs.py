SQL = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    database TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_by TEXT,
    channel TEXT,
    message_id TEXT,
    response_url TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    error TEXT,
    detail TEXT,
    reported INTEGER NOT NULL DEFAULT 0
);
-- one backup, restore or drill per database at a time; a restore's safety snapshot (kind
-- 'snapshot') runs inside the restore that already holds the database
CREATE UNIQUE INDEX jobs_one_running_per_database ON jobs (database) WHERE status = 'running' AND kind <> 'snapshot';
CREATE TABLE backups (
    id INTEGER PRIMARY KEY,
    job_id INTEGER REFERENCES jobs (id),
    database TEXT NOT NULL,
    kind TEXT NOT NULL,
    format TEXT NOT NULL,
    compression TEXT NOT NULL,
    tables TEXT,
    schema_only INTEGER NOT NULL DEFAULT 0,
    note TEXT,
    requested_by TEXT,
    created_at TEXT NOT NULL,
    duration_s REAL,
    storage_url TEXT NOT NULL,
    key TEXT NOT NULL,
    manifest_key TEXT NOT NULL,
    size INTEGER NOT NULL,
    raw_size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    pg_dump_version TEXT,
    server_version TEXT,
    database_size INTEGER,
    row_counts TEXT,
    not_valid_constraints TEXT,
    verification TEXT NOT NULL DEFAULT 'unverified',
    verified_at TEXT,
    restore_seconds REAL,
    pruned_at TEXT,
    prune_reason TEXT
);
CREATE INDEX backups_by_database ON backups (database, created_at);
CREATE TABLE processed_events (
    event_id TEXT PRIMARY KEY,
    received_at TEXT NOT NULL
)
"""
