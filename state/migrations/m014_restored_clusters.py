"""Point-in-time copies: the clusters `/restore --time` leaves running for the user, until dropped.

A copy is named by the restore request that made it (one request makes at most one copy), so
`/restore drop-copy 12` is request #12's. `datadir` is only ever acted on after checking that it
sits in this instance's scratch folder; `dropped_at` is set once, by `/restore drop-copy` or by
the `[restore] copy_ttl_hours` sweep, and a dropped copy is listed nowhere.
"""

SQL = """
CREATE TABLE restored_clusters (
    request_id INTEGER PRIMARY KEY REFERENCES restore_requests (id),
    database TEXT NOT NULL,
    datadir TEXT NOT NULL,
    port INTEGER NOT NULL,
    requested_by TEXT,
    started_at TEXT NOT NULL,
    dropped_at TEXT,
    dropped_by TEXT,
    drop_reason TEXT
);
CREATE INDEX restored_clusters_live ON restored_clusters (dropped_at, database)
"""
