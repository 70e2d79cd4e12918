"""`backupbot init --pgbackrest-remote DB`: both sides' pgBackRest config for a cluster on another host.

The bot writes its own side (pgbackrest.conf with pg1-host over TLS and this host's TLS server, and
restore.conf) where it always does, and prints the database host's: its pgbackrest.conf on stdout
(redirect it into the file), the steps on stderr: the archive_command and the two `pgbackrest server`s.
"""

from __future__ import annotations

import sys

from commands.backup.physical import engine_config, pgbackrest_settings
from commands.errors import ConfigError
from commands.pg.pgbackrest.remote import layout_of, remote_archive_command, remote_config, server_argv
from commands.settings import load_settings


def run_pgbackrest_remote(args, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    settings = load_settings(args.config)
    database = settings.database(args.pgbackrest_remote).name
    if pgbackrest_settings(settings, database).remote is None:
        raise ConfigError(f"databases.{database}.pgbackrest has no pg_host: the cluster is on this host, and the "
                          "config the bot writes is all it needs (see the README, Physical backups)")
    cfg = engine_config(settings, database)  # (re)writes this host's side
    layout = layout_of(cfg)
    tls = cfg.tls
    out.write(remote_config(cfg))
    command = remote_archive_command(cfg)
    steps = [
        f"This host's side is in {cfg.config_path} (and {cfg.restore_side().config_path} for restores here).",
        f"On {tls.pg_host}, as root:",
        f"  1. Save the config printed on stdout as {layout.config_path} and put the CA, that host's certificate",
        f"     (CN {tls.client_cn}) and key in {layout.tls_dir}/ as ca.crt, server.crt, server.key; all owned by",
        "     postgres, mode 0600.",
        "  2. Run its TLS server as postgres (a systemd unit, see the README):",
        f"     {' '.join(server_argv(layout.config_path))}",
        "  3. Turn on archiving, then restart PostgreSQL:",
        "     ALTER SYSTEM SET archive_mode = 'on';",
        f"     ALTER SYSTEM SET archive_command = '{command}';",
        f"  pgBackRest on {tls.pg_host} connects to PostgreSQL over the socket as {cfg.pg_user}: allow it "
        "(peer authentication).",
        f"On this host, as the bot's user, run this host's TLS server (the WAL of {tls.pg_host} arrives there, "
        f"on port {tls.server_port}):",
        f"     {' '.join(server_argv(cfg.config_path))}",
        "Then `backupbot check` tests both connections and creates the stanza when it is missing.",
        f"archive_command: {command}",
    ]
    err.write("\n".join(steps) + "\n")
    return 0
