"""pgbackrest.conf: one database's stanza as the bot configures it, and the file it writes for it.

The config file never holds a secret (the password goes to pgBackRest as PGPASSWORD, see runner.py),
and as root its folders belong to the user pgBackRest runs as.

With `tls` the cluster is on another host: pgbackrest.conf reaches it as pg1-host over pgBackRest's TLS
server and also configures this host's own TLS server (for the WAL that host pushes), and restore.conf
beside it knows only the repository, for restores into a data directory on this host.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from commands.errors import ConfigError

_STANZA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class TlsConfig:
    """The database host's `pgbackrest server` and this host's own one, with this host's certificate."""

    pg_host: str
    repo_host: str               # how the database host reaches this host's TLS server
    ca_file: Path
    cert_file: Path
    key_file: Path
    pg_host_port: int = 8432
    pg_host_cn: str | None = None  # the CN of the database host's client certificate; None: pg_host
    pg_host_config: Path = Path("/etc/pgbackrest/pgbackrest.conf")  # the config its server's processes read
    server_address: str = "*"
    server_port: int = 8432

    @property
    def client_cn(self) -> str:
        return self.pg_host_cn or self.pg_host


@dataclass(frozen=True)
class PgBackRestConfig:
    """One database's stanza. `config_path` is an existing pgbackrest.conf (or the one
    write_config generated); the other fields are what write_config puts in it."""

    stanza: str
    repo_path: Path | None = None
    pg_path: Path | None = None
    pg_port: int = 5432
    pg_socket_path: Path | None = None
    pg_user: str = "postgres"
    retention_full: int = 2
    config_path: Path | None = None
    compress_type: str = "zst"
    process_max: int = 1
    # the OS user pgbackrest runs as; None: `postgres` when the bot is root, else the bot's own user
    os_user: str | None = None
    # the database password, given to pgbackrest as PGPASSWORD (never written to the config file)
    password: str | None = field(default=None, repr=False, compare=False)
    tls: TlsConfig | None = None  # the cluster is on tls.pg_host; None: on this host

    def __post_init__(self):
        if not _STANZA.match(self.stanza or ""):
            raise ConfigError(f"pgbackrest.stanza: expected letters, digits, '_', '.' or '-', got {self.stanza!r}")
        if self.compress_type not in ("none", "bz2", "gz", "lz4", "zst"):
            raise ConfigError(f"pgbackrest.compress_type: expected none, bz2, gz, lz4 or zst, got {self.compress_type!r}")
        if not isinstance(self.retention_full, int) or self.retention_full < 1:
            raise ConfigError(f"pgbackrest.retention_full: expected a whole number >= 1, got {self.retention_full!r}")

    def with_config(self, path: Path) -> PgBackRestConfig:
        return dataclasses.replace(self, config_path=Path(path))

    @property
    def remote(self) -> bool:
        return self.tls is not None

    def restore_side(self) -> PgBackRestConfig:
        """The config a restore on this host runs with: for a remote cluster restore.conf (the repository
        only: pgBackRest restores where it runs, and pg1-host would send it to the database host)."""
        if self.tls is None or self.config_path is None:
            return self
        return dataclasses.replace(self, tls=None, pg_path=None, config_path=self.config_path.with_name("restore.conf"))

    def run_as(self) -> str | None:
        """The user to switch to (as root only), or None to run as ourselves."""
        if os.geteuid() != 0:
            return None
        user = self.os_user or "postgres"
        return None if user == "root" else user


def ini_value(key: str, value: object) -> str:
    text = str(value)
    if "\n" in text or "\r" in text or text != text.strip():
        raise ConfigError(f"pgbackrest.{key}: line breaks and surrounding spaces are not allowed")
    return text


def chown(path: Path, user: str | None) -> None:
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def write_config(cfg: PgBackRestConfig, directory: Path) -> Path:
    """Write `directory`/pgbackrest.conf (0600) for cfg's stanza, with log, lock and spool folders
    inside `directory`, and return its path. Use `cfg.with_config(path)` to run against it."""
    if cfg.repo_path is None or cfg.pg_path is None:
        raise ConfigError("pgbackrest: repo_path and pg_path are needed to generate a config")
    directory = Path(directory)
    owner = cfg.run_as()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    chown(directory, owner)
    folders = {name: directory / name for name in ("log", "lock", "spool")}
    for folder in folders.values():
        folder.mkdir(mode=0o700, exist_ok=True)
        chown(folder, owner)
    repo = Path(cfg.repo_path)
    if not repo.exists():
        repo.mkdir(mode=0o750, parents=True)
        chown(repo, owner)
    lines = [
        "[global]",
        f"repo1-path={ini_value('repo_path', repo)}",
        f"repo1-retention-full={cfg.retention_full}",
        f"log-path={ini_value('log_path', folders['log'])}",
        f"lock-path={ini_value('lock_path', folders['lock'])}",
        f"spool-path={ini_value('spool_path', folders['spool'])}",
        "log-level-console=off",
        "log-level-stderr=warn",
        "log-level-file=info",
        "start-fast=y",
        f"compress-type={cfg.compress_type}",
        f"process-max={int(cfg.process_max)}",
    ]
    if cfg.tls:  # the restore config: repository only (a restore's pg1-path comes on its command line)
        _write_private(directory / "restore.conf", lines + ["", f"[{cfg.stanza}]"], owner)
        lines += _tls_server_lines(cfg.tls, cfg.stanza)
    lines += ["", *stanza_lines(cfg)]
    if cfg.tls:
        lines += _tls_client_lines(cfg.tls)
    return _write_private(directory / "pgbackrest.conf", lines, owner)


def _tls_server_lines(tls: TlsConfig, stanza: str) -> list[str]:
    """This host's `pgbackrest server`: only the database host's certificate, only for this stanza."""
    return [
        f"tls-server-address={ini_value('tls_server_address', tls.server_address)}",
        f"tls-server-port={int(tls.server_port)}",
        f"tls-server-ca-file={ini_value('tls_ca_file', tls.ca_file)}",
        f"tls-server-cert-file={ini_value('tls_cert_file', tls.cert_file)}",
        f"tls-server-key-file={ini_value('tls_key_file', tls.key_file)}",
        f"tls-server-auth={ini_value('pg_host_cn', tls.client_cn)}={stanza}",
    ]


def _tls_client_lines(tls: TlsConfig) -> list[str]:
    return [
        f"pg1-host={ini_value('pg_host', tls.pg_host)}",
        "pg1-host-type=tls",
        f"pg1-host-port={int(tls.pg_host_port)}",
        f"pg1-host-config={ini_value('pg_host_config', tls.pg_host_config)}",
        f"pg1-host-ca-file={ini_value('tls_ca_file', tls.ca_file)}",
        f"pg1-host-cert-file={ini_value('tls_cert_file', tls.cert_file)}",
        f"pg1-host-key-file={ini_value('tls_key_file', tls.key_file)}",
    ]


def stanza_lines(cfg) -> list[str]:
    """The stanza's section as the database host's side knows it: where the cluster is and how to log in."""
    lines = [f"[{cfg.stanza}]", f"pg1-path={ini_value('pg_path', cfg.pg_path)}", f"pg1-port={int(cfg.pg_port)}",
             f"pg1-user={ini_value('pg_user', cfg.pg_user)}"]
    if cfg.pg_socket_path:
        lines.append(f"pg1-socket-path={ini_value('pg_socket_path', cfg.pg_socket_path)}")
    return lines


def _write_private(path: Path, lines: list[str], owner: str | None) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    chown(tmp, owner)
    os.replace(tmp, path)
    return path


def archive_command(cfg: PgBackRestConfig) -> str:
    """The archive_command that pushes WAL into cfg's stanza (for postgresql.conf, not a shell of ours)."""
    if cfg.config_path is None:
        raise ConfigError("pgbackrest: no config file (write_config first, or set config_path)")
    return f"{shutil.which('pgbackrest') or 'pgbackrest'} --config={cfg.config_path} --stanza={cfg.stanza} archive-push %p"
