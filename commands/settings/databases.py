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
```
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from commands.errors import ConfigError
from commands.settings.values import ENV_RE, http_url, known_keys, named_tables, string, whole_number

DATABASE_KEYS = ("url_env", "health_url", "heartbeat_url", "pgbackrest", "verify_command")
PGBACKREST_STANZA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # as commands.pg.pgbackrest checks it
PGBACKREST_GENERATED_KEYS = ("stanza", "repo_path", "pg_path", "pg_port", "pg_user", "pg_socket_path", "retention_full")
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

    @property
    def generated(self) -> bool:
        return self.config is None


@dataclass(frozen=True)
class DatabaseConfig:
    name: str
    url_env: str = "DATABASE_URL"
    health_url: str | None = None
    url: str | None = None  # resolved from url_env; never logged
    heartbeat_url: str | None = None  # pinged after each successful scheduled backup (healthchecks.io-style)
    pgbackrest: PgBackRestSettings | None = None  # physical backups and WAL archiving (see parse_pgbackrest)
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
            verify_command=_command(table, where),
        )
    return databases


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
    )


def _absolute_path(table: Mapping, where: str, key: str, required: bool) -> str | None:
    text = table.get(key)
    if text is None and not required:
        return None
    if text is None:
        raise ConfigError(f"{where}.{key}: missing (an absolute path), or give config = FILE and stanza instead")
    if not isinstance(text, str) or not text.startswith("/") or any(c in text for c in "\n\r\0") or text != text.strip():
        raise ConfigError(f"{where}.{key}: expected an absolute path, got {text!r}")
    return text
