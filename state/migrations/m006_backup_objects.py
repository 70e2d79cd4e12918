"""What a restore needs to know exactly, recorded at backup time in the dump's snapshot.

`objects` holds the schemas the dump writes and, per table, the OIDs of everything that belongs to
it, so a restore never reads names back out of `pg_restore --list` text. `dbname` is the
PostgreSQL database the backup was taken of: a safety snapshot of a `--into` copy is a backup of
that copy, never of the configured database.
"""

SQL = """
ALTER TABLE backups ADD COLUMN objects TEXT;
ALTER TABLE backups ADD COLUMN dbname TEXT;
"""
