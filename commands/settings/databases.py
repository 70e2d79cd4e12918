"""[databases.NAME]: the databases the bot backs up, each with the environment variable holding its URL.

DSNs never live in the file: a database names the environment variable that holds its URL, so the file
can be committed and shown without leaking credentials.

```toml
[databases.main]
url_env = "DATABASE_URL"
health_url = "https://app.example.com/healthz"    # optional, checked after a restore
heartbeat_url = "https://hc-ping.com/UUID"        # optional, pinged after each scheduled backup
verify_command = "pytest -q tests/smoke"          # optional, run against a DR rehearsal's copy
pgbackrest = { stanza = "main", repo_path = "/var/lib/pgbackrest", pg_path = "/var/lib/postgresql/16/main" }
smoke_sql = ["SELECT count(*) > 0 FROM users"]    # optional: queries a drill's copy must answer true
```

A database on another host adds `pg_host` (and the TLS keys of PGBACKREST_TLS_KEYS): the bot then drives
pgBackRest's own TLS server on that host, and runs one of its own for the WAL that host pushes back.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from commands.errors import ConfigError
from commands.settings.values import ENV_RE, http_url, known_keys, named_tables, string, whole_number

DATABASE_KEYS = ("url_env", "health_url", "heartbeat_url", "pgbackrest", "smoke_sql", "verify_command")
PGBACKREST_STANZA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # as commands.pg.pgbackrest checks it
PGBACKREST_TLS_KEYS = ("pg_host", "pg_host_port", "pg_host_cn", "pg_host_config", "repo_host", "tls_ca_file", "tls_cert_file",
                       "tls_key_file", "tls_server_address", "tls_server_port")
PGBACKREST_GENERATED_KEYS = ("stanza", "repo_path", "pg_path", "pg_port", "pg_user", "pg_socket_path", "retention_full",
                             *PGBACKREST_TLS_KEYS)
HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")  # a DNS name or an IPv4 address
TLS_PORT = 8432  # pgBackRest's default tls-server-port
PG_ROLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class PgBackRestSettings:
    """`[databases.X] pgbackrest = {...}`: either `config` (an existing pgbackrest.conf) and `stanza`, or
    what the bot writes a config from (stanza, repo_path, pg_path, pg_port, ...). Turned into the
    engine's PgBackRestConfig by commands.backup.physical.engine_config."""

    stanza: str
    config: str | None = None  # an existing pgbackrest.conf; nothing is generated
    repo_path: str | None = None
    pg_path: str | None = None
    pg_port: int = 5432
    pg_user: str | None = None  # None: the user of the database's DSN
    pg_socket_path: str | None = None  # None: the DSN's host when it is a socket folder
    retention_full: int = 2
    remote: PgBackRestRemote | None = None  # the cluster is on another host, reached through pgBackRest's TLS server

    @property
    def generated(self) -> bool:
        return self.config is None


@dataclass(frozen=True)
class PgBackRestRemote:
    """The database host's `pgbackrest server` (pg_host:pg_host_port), and the bot host's own one
    (tls_server_address:tls_server_port, reached from there as repo_host) that takes the WAL the
    database host pushes. One certificate (with its CA and key) is the bot host's identity both ways."""

    pg_host: str
    repo_host: str
    tls_ca_file: str
    tls_cert_file: str
    tls_key_file: str
    pg_host_port: int = TLS_PORT
    pg_host_cn: str | None = None  # the CN of the database host's certificate; None: pg_host
    pg_host_config: str = "/etc/pgbackrest/pgbackrest.conf"  # the database host's pgbackrest.conf
    tls_server_address: str = "*"
    tls_server_port: int = TLS_PORT


@dataclass(frozen=True)
class DatabaseConfig:
    name: str
    url_env: str = "DATABASE_URL"
    health_url: str | None = None
    url: str | None = None  # resolved from url_env; never logged
    heartbeat_url: str | None = None  # pinged after each successful scheduled backup (healthchecks.io-style)
    pgbackrest: PgBackRestSettings | None = None  # physical backups and WAL archiving (see parse_pgbackrest)
    smoke_sql: tuple[str, ...] = ()  # the operator's assertions on a restored copy: each must return true
    verify_command: str | None = None  # the application's own checks, run against a rehearsal's copy

    def require_url(self) -> str:
        if not self.url:
            raise ConfigError(
                f"databases.{self.name}: environment variable {self.url_env} is not set"
            )
        return self.url


def parse_databases(tables: Mapping, env: Mapping[str, str]) -> dict[str, DatabaseConfig]:
    """Every `[databases.NAME]` of the [databases] table; none configured: `main` from $DATABASE_URL."""
    databases = {}
    for name, table in named_tables(tables or {"main": {"url_env": "DATABASE_URL"}}, "databases", "database"):
        where = f"databases.{name}"
        known_keys(table, where, DATABASE_KEYS)
        url_env = string(table, where, "url_env", "DATABASE_URL")
        if not ENV_RE.match(url_env):
            raise ConfigError(f"{where}.url_env: {url_env!r} is not an environment variable name")
        databases[name] = DatabaseConfig(
            name=name, url_env=url_env, health_url=http_url(table, where, "health_url", secret=False),
            url=env.get(url_env), heartbeat_url=http_url(table, where, "heartbeat_url"),
            pgbackrest=parse_pgbackrest(table.get("pgbackrest"), f"{where}.pgbackrest"),
            smoke_sql=parse_smoke_sql(table, where),
            verify_command=_command(table, where),
        )
    return databases


def parse_smoke_sql(table: Mapping, where: str) -> tuple[str, ...]:
    """`smoke_sql = ["SELECT ...", ...]`: queries that must each return one row whose first column is
    true, run read-only on a drill's (or a side database's) restored copy (commands.restore.deep_verify)."""
    value = table.get("smoke_sql", [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}.smoke_sql: expected a list of SQL queries, each returning true, "
                          'like ["SELECT count(*) > 0 FROM users"]')
    return tuple(v.strip() for v in value)


def _command(table: Mapping, where: str) -> str | None:
    """`verify_command = "pytest -q tests/smoke"`: split like a shell would, run without one."""
    value = table.get("verify_command")
    if value is None:
        return None
    try:
        words = shlex.split(value) if isinstance(value, str) else None
    except ValueError as exc:
        raise ConfigError(f"{where}.verify_command: {exc}") from None
    if not words:
        raise ConfigError(f"{where}.verify_command: expected a command line like \"pytest -q tests/smoke\"")
    return value


def parse_pgbackrest(value, where: str) -> PgBackRestSettings | None:
    """`pgbackrest = { config = FILE, stanza = NAME }` or `{ stanza, repo_path, pg_path, pg_port, ... }`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table like {{ stanza = \"main\", repo_path = \"...\", pg_path = \"...\" }} "
                          "or { config = \"/etc/pgbackrest/pgbackrest.conf\", stanza = \"main\" }")
    stanza = value.get("stanza")
    if not isinstance(stanza, str) or not PGBACKREST_STANZA_RE.match(stanza):
        raise ConfigError(f"{where}.stanza: expected a stanza name (letters, digits, '_', '.' or '-'), got {stanza!r}")
    if "config" in value:
        known_keys(value, where, ("config", "stanza"), " (with config = FILE, the file holds everything else)")
        return PgBackRestSettings(stanza=stanza, config=_absolute_path(value, where, "config", True))
    known_keys(value, where, PGBACKREST_GENERATED_KEYS)
    pg_user = value.get("pg_user")
    if pg_user is not None and (not isinstance(pg_user, str) or not PG_ROLE_RE.match(pg_user)):
        raise ConfigError(f"{where}.pg_user: expected a PostgreSQL role name, got {pg_user!r}")
    pg_port = whole_number(value, where, "pg_port", 5432, 1, 65535, what="a port number 1-65535")
    return PgBackRestSettings(
        stanza=stanza, repo_path=_absolute_path(value, where, "repo_path", True),
        pg_path=_absolute_path(value, where, "pg_path", True), pg_port=pg_port, pg_user=pg_user,
        pg_socket_path=_absolute_path(value, where, "pg_socket_path", False),
        retention_full=whole_number(value, where, "retention_full", 2),
        remote=_parse_remote(value, where),
    )


def _parse_remote(value: Mapping, where: str) -> PgBackRestRemote | None:
    """The TLS keys, all checked now: a missing certificate or a key others can read is a config error
    at start-up, not a failed backup at 2am."""
    given = [key for key in PGBACKREST_TLS_KEYS if key in value]
    if not given:
        return None
    if "pg_host" not in value:
        raise ConfigError(f"{where}.{given[0]}: only with pg_host (the database host running `pgbackrest server`)")
    hosts = {key: _host(value, where, key) for key in ("pg_host", "repo_host", "pg_host_cn", "tls_server_address")}
    if hosts["repo_host"] is None:
        raise ConfigError(f"{where}.repo_host: missing: the name the database host reaches this host by (its WAL "
                          "goes to this host's `pgbackrest server`)")
    files = {key: _tls_file(value, where, key, private=key == "tls_key_file")
             for key in ("tls_ca_file", "tls_cert_file", "tls_key_file")}
    return PgBackRestRemote(
        pg_host=hosts["pg_host"], repo_host=hosts["repo_host"], pg_host_cn=hosts["pg_host_cn"],
        tls_server_address=hosts["tls_server_address"] or "*", **files,
        pg_host_config=_absolute_path(value, where, "pg_host_config", False) or PgBackRestRemote.pg_host_config,
        pg_host_port=whole_number(value, where, "pg_host_port", TLS_PORT, 1, 65535, what="a port number 1-65535"),
        tls_server_port=whole_number(value, where, "tls_server_port", TLS_PORT, 1, 65535, what="a port number 1-65535"))


def _host(table: Mapping, where: str, key: str) -> str | None:
    text = table.get(key)
    if text is None:
        return None
    if not isinstance(text, str) or not (HOST_RE.match(text) or (key == "tls_server_address" and text == "*")):
        raise ConfigError(f"{where}.{key}: expected a host name or address, got {text!r}")
    return text


def _tls_file(table: Mapping, where: str, key: str, private: bool) -> str:
    path = _absolute_path(table, where, key, False)
    if path is None:
        raise ConfigError(f"{where}.{key}: missing (an absolute path): pg_host needs tls_ca_file, tls_cert_file "
                          "and tls_key_file")
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{where}.{key}: cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode) or not os.access(path, os.R_OK):
        raise ConfigError(f"{where}.{key}: {path} is not a file this user can read")
    if private and info.st_mode & 0o077:
        raise ConfigError(f"{where}.{key}: {path} is readable by others (mode {info.st_mode & 0o777:04o}): "
                          f"chmod 600 {path}")
    return path


def _absolute_path(table: Mapping, where: str, key: str, required: bool) -> str | None:
    text = table.get(key)
    if text is None and not required:
        return None
    if text is None:
        raise ConfigError(f"{where}.{key}: missing (an absolute path), or give config = FILE and stanza instead")
    if not isinstance(text, str) or not text.startswith("/") or any(c in text for c in "\n\r\0") or text != text.strip():
        raise ConfigError(f"{where}.{key}: expected an absolute path, got {text!r}")
    return text
