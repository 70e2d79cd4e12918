"""The database host's side of a remote stanza: the pgbackrest.conf it needs and its archive_command.

pgBackRest's documented layout for a repository on another host than the cluster, with its own TLS
server (`pgbackrest server`) on both: the bot's host holds the repository and reaches the database
host's server (pg1-host, pg1-host-type=tls) for backups and `check`; the database host pushes WAL
back to the bot host's server (repo1-host, repo1-host-type=tls) from its archive_command. Each side
lets in only the other's client certificate (tls-server-auth=CN=stanza), so the certificate names are
read from the files here rather than typed twice. The bot never logs in to the database host: it only
prints what an administrator installs there.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from commands.errors import ConfigError
from commands.pg.pgbackrest.config import PgBackRestConfig, ini_value, stanza_lines

DEFAULT_REMOTE_DIR = Path("/etc/pgbackrest")


def certificate_cn(path: Path) -> str:
    """The subject CN of a PEM certificate: what the other side's tls-server-auth must name."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a PEM certificate ({type(exc).__name__})") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ConfigError(f"{path}: the certificate has no CN, which pgBackRest's tls-server-auth needs")
    return str(names[0].value)


@dataclass(frozen=True)
class RemoteLayout:
    """Where things live on the database host: its config (pg_host_config), the certificate files in tls/
    beside it and, outside /etc/pgbackrest, its log, lock and spool folders there too."""

    config_path: Path = DEFAULT_REMOTE_DIR / "pgbackrest.conf"

    @property
    def directory(self) -> Path:
        return self.config_path.parent

    @property
    def tls_dir(self) -> Path:
        return self.directory / "tls"

    @property
    def custom(self) -> bool:
        return self.directory != DEFAULT_REMOTE_DIR


def layout_of(cfg: PgBackRestConfig) -> RemoteLayout:
    if cfg.tls is None:
        raise ConfigError(f"pgbackrest stanza {cfg.stanza}: the cluster is on this host (no pg_host)")
    return RemoteLayout(Path(cfg.tls.pg_host_config))


def remote_archive_command(cfg: PgBackRestConfig) -> str:
    """The database host's archive_command: its own pgbackrest, its own config (never one of the bot's)."""
    layout = layout_of(cfg)
    config = f" --config={layout.config_path}" if layout.custom else ""
    return f"pgbackrest{config} --stanza={cfg.stanza} archive-push %p"


def remote_config(cfg: PgBackRestConfig) -> str:
    """The database host's pgbackrest.conf for cfg's stanza (owner postgres, mode 0600)."""
    layout = layout_of(cfg)
    tls, certs = cfg.tls, layout.tls_dir
    folders = ([f"log-path={layout.directory / 'log'}", f"lock-path={layout.directory / 'lock'}",
                f"spool-path={layout.directory / 'spool'}"] if layout.custom else [])
    lines = [
        f"# {layout.config_path} on {tls.pg_host}, written by `backupbot init --pgbackrest-remote`.",
        f"# Certificates: {certs}/ca.crt (the CA that signed both hosts'), {certs}/server.crt with CN",
        f"# {tls.client_cn} and {certs}/server.key (mode 0600); all owned by postgres.",
        "[global]",
        # WAL goes to the bot host's TLS server, which holds the repository
        f"repo1-host={ini_value('repo_host', tls.repo_host)}",
        "repo1-host-type=tls",
        f"repo1-host-port={int(tls.server_port)}",
        # the config the bot host's server processes read (they run as the bot's user)
        f"repo1-host-config={ini_value('config_path', cfg.config_path)}",
        f"repo1-host-ca-file={certs / 'ca.crt'}",
        f"repo1-host-cert-file={certs / 'server.crt'}",
        f"repo1-host-key-file={certs / 'server.key'}",
        # this host's TLS server, for the bot's backups and checks: only the bot's certificate, only this stanza
        "tls-server-address=*",
        f"tls-server-port={int(tls.pg_host_port)}",
        f"tls-server-ca-file={certs / 'ca.crt'}",
        f"tls-server-cert-file={certs / 'server.crt'}",
        f"tls-server-key-file={certs / 'server.key'}",
        f"tls-server-auth={certificate_cn(tls.cert_file)}={cfg.stanza}",
        *folders,
        "log-level-console=off",
        "log-level-stderr=warn",
        f"compress-type={cfg.compress_type}",
        "",
        *stanza_lines(cfg),
    ]
    return "\n".join(lines) + "\n"


def server_argv(config_path: Path) -> list[str]:
    """`pgbackrest server` with a config: the long-running TLS server each side runs."""
    return [shutil.which("pgbackrest") or "pgbackrest", f"--config={config_path}", "server"]
