"""Physical backups (pgBackRest) in the catalog, in a table of their own.

They share the id space of logical backups (both take their job's id), so `/backup list` and
`/restore` name every backup by one number, but nothing that reads `backups` sees them: `latest`,
retention's keep rules, the RPO of dumps and logical drills are exactly as before. pgBackRest
keeps and expires them itself (`repo1-retention-full`); `expired_at` records when the bot saw a
backup gone from `pgbackrest info`.
"""

SQL = """
CREATE TABLE physical_backups (
    id INTEGER PRIMARY KEY,
    job_id INTEGER REFERENCES jobs (id),
    database TEXT NOT NULL,
    kind TEXT NOT NULL,
    format TEXT NOT NULL DEFAULT 'physical',
    stanza TEXT NOT NULL,
    label TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('full', 'diff', 'incr')),
    prior TEXT,
    requested_by TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    stopped_at TEXT,
    duration_s REAL,
    size INTEGER NOT NULL,
    delta INTEGER NOT NULL,
    repo_size INTEGER NOT NULL,
    repo_delta INTEGER NOT NULL,
    wal_start TEXT,
    wal_stop TEXT,
    lsn_start TEXT,
    lsn_stop TEXT,
    checksum_errors INTEGER NOT NULL DEFAULT 0,
    pgbackrest_version TEXT,
    verification TEXT NOT NULL DEFAULT 'unverified',
    verified_at TEXT,
    restore_seconds REAL,
    expired_at TEXT
);
CREATE UNIQUE INDEX physical_backups_one_per_label ON physical_backups (database, label);
CREATE INDEX physical_backups_by_database ON physical_backups (database, created_at)
"""
