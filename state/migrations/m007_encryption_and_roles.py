"""Encrypted artifacts, the cluster's globals beside them, and the roles a restore needs.

`encryption` is "age" when the artifact (and its globals file) is age-encrypted, with the public
keys it was encrypted to in `recipients` (JSON list). `roles` names the roles the database's objects
are owned by or granted to, and `role_definitions` holds their attributes and memberships (JSON,
commands.pg.globals.role_definitions), both read in the dump's snapshot. `globals_file` names the
`pg_dumpall --globals-only` file stored beside a full backup's artifact: {"key", "sha256", "size",
"passwords"}.
"""

SQL = """
ALTER TABLE backups ADD COLUMN encryption TEXT;
ALTER TABLE backups ADD COLUMN recipients TEXT;
ALTER TABLE backups ADD COLUMN roles TEXT;
ALTER TABLE backups ADD COLUMN role_definitions TEXT;
ALTER TABLE backups ADD COLUMN globals_file TEXT;
"""
