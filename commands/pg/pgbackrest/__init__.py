"""pgBackRest as the engine for physical backups and point-in-time recovery.

The bot drives the `pgbackrest` binary as a subprocess, always with `--config=FILE --stanza=NAME`
in argv and never a secret there: a database password reaches pgBackRest (libpq) only as
PGPASSWORD in its environment. Its state is read only from `pgbackrest info --output=json`.

As root, pgBackRest and the restored servers run as the `postgres` user (the same user whose
`archive_command` pushes WAL into the repository), so every file of a repository stays owned by
one user. Nothing here changes the live cluster: a restore always goes into a new data directory
that is started on its own port, with archiving off so it never pushes WAL into the same stanza.

A cluster on another host is reached through pgBackRest's own TLS server there (pg1-host-type=tls);
its WAL comes back to this host's TLS server, and restores of it run here from the repository here.

One module per concern, each importing only those before it: `config` (the stanza and the
pgbackrest.conf the bot writes) <- `remote` (the other host's side of a TLS stanza) and `runner`
(the subprocess, its errors) <- `backups` (`info` and `backup`) <- `archiver` (pg_stat_archiver,
forcing WAL out, reachability of a time) <- `restored_cluster` (a restore into a new data directory,
started and stopped). Import from the module that owns a name.
"""
