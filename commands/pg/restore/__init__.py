"""Restoring a logical backup: fetch and check its artifact, then psql or pg_restore into a database.

The artifact is first copied to a local file (decompressed) while its sha256 is checked against
the catalog, so a corrupted or tampered artifact is refused before the target is touched.
A restore into an existing database runs in one transaction that the bot itself opens and
closes: psql reads BEGIN, the cleaning prologue, the dump, the verification and COMMIT from a pipe
the bot writes, and COMMIT is written only after every child exited 0, so a pg_restore that dies
half-way leaves psql at end-of-file inside an open transaction, which PostgreSQL rolls back.
`--jobs N` cannot be one transaction: it restores into a side database that is verified and then
swapped in by name (commands.restore.run).

Every name in SQL the bot writes comes from the backup's manifest (read in the dump's snapshot)
through `psycopg.sql.Identifier`; archive entries are chosen by the OIDs the manifest recorded.

One module per step: `artifact` (fetch, decrypt, decompress, check; and the scratch folder),
`toc` (which archive entries a `--tables` restore keeps), `databases` (create, copy settings,
rename and swap, drop), `script` (the SQL the bot writes around the dump) and `runner` (the
psql and pg_restore processes, which uses the other three). Import from the module that owns a name.
"""
