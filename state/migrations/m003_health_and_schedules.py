SQL = """
CREATE TABLE health_samples (
    id INTEGER PRIMARY KEY,
    database TEXT NOT NULL,
    taken_at TEXT NOT NULL,
    status TEXT NOT NULL,
    size_bytes INTEGER,
    detail TEXT
);
CREATE INDEX health_samples_by_database ON health_samples (database, taken_at);
CREATE TABLE schedule_runs (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    database TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX schedule_runs_by_job ON schedule_runs (job, database, started_at);
CREATE TABLE alert_state (
    key TEXT PRIMARY KEY,
    firing INTEGER NOT NULL,
    since TEXT NOT NULL
)
"""
