"""Configuration: a TOML file plus the environment, validated once at start.

DSNs never live in the file: a database names the environment variable that holds its URL, so
the file can be committed and shown without leaking credentials.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyrage
from pyrage import x25519

from commands.errors import ConfigError, UnknownDatabaseError
from commands.settings.health import HealthSettings, parse_health
from commands.settings.incidents import IncidentSettings, parse_incidents
from commands.settings.retention import RetentionRules, parse_retention
from commands.settings.schedules import ScheduledJob, parse_schedules
from commands.settings.targets import TargetConfig, parse_targets
from commands.signing import KEY_ENV, Keyring, parse_signing

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
SLACK_ID_RE = re.compile(r"^[UWS][A-Z0-9]{2,}$")
CHANNEL_RE = re.compile(r"^[CGD][A-Z0-9]{2,}$")
OS_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")  # a POSIX account name, as useradd takes it


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
    pgbackrest: PgBackRestSettings | None = None  # physical backups and WAL archiving (see _pgbackrest)

    def require_url(self) -> str:
        if not self.url:
            raise ConfigError(
                f"databases.{self.name}: environment variable {self.url_env} is not set"
            )
        return self.url


@dataclass(frozen=True)
class AccessConfig:
    operators: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()
    required_approvals: int = 1
    approval_ttl_minutes: int = 30
    approve_emoji: str = "white_check_mark"
    reject_emoji: str = "x"
    viewers: tuple[str, ...] = ()  # may run /db-health besides the operators
    approve_new_database_restores: bool = True  # `/restore --into NEW_DB` copies production data
    console_operators: tuple[str, ...] = ()  # OS accounts whose `backupbot console` may operate (it never approves)


@dataclass(frozen=True)
class JobsConfig:
    max_running: int = 2  # backups, restores and drills running at once, across all databases


@dataclass(frozen=True)
class ChannelsConfig:
    alerts: str | None = None
    digest: str | None = None


@dataclass(frozen=True)
class AlertsConfig:
    webhook_url: str | None = None  # JSON POST of every alert (failures, RPO breaches), for when Slack is down


@dataclass(frozen=True)
class Settings:
    state_path: str = "backupbot.db"
    scratch_dir: str | None = None  # [state] private folder for restore files; None: `scratch` beside state_path
    storage_url: str = "file://./backups"
    encrypt_to: tuple[str, ...] = ()  # [storage] age public keys (age1…) every artifact is encrypted to
    identity_file: str | None = None  # [storage] the age private key file, read only to restore or drill
    signing: Keyring = field(default_factory=Keyring)  # [storage] signing_key_files, $BACKUPBOT_SIGNING_KEY
    databases: Mapping[str, DatabaseConfig] = field(default_factory=dict)
    access: AccessConfig = field(default_factory=AccessConfig)
    channels: ChannelsConfig = field(default_factory=ChannelsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    # The sections below are parsed and checked once, in parse_settings (see commands/settings_*.py).
    schedules: tuple[ScheduledJob, ...] = ()
    retention: Mapping[str, RetentionRules] = field(default_factory=dict)  # per configured database
    health: HealthSettings = field(default_factory=HealthSettings)
    incidents: IncidentSettings = field(default_factory=IncidentSettings)
    targets: Mapping[str, TargetConfig] = field(default_factory=dict)  # servers that may receive restores
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str | None = None
    config_path: str | None = None

    def target(self, name: str) -> TargetConfig:
        try:
            return self.targets[name]
        except KeyError:
            known = ", ".join(sorted(self.targets)) or "none"
            raise UnknownDatabaseError(f"unknown restore target {name!r} (configured in [targets]: {known})") from None

    def database(self, name: str) -> DatabaseConfig:
        try:
            return self.databases[name]
        except KeyError:
            known = ", ".join(sorted(self.databases)) or "none"
            raise UnknownDatabaseError(f"unknown database {name!r} (configured: {known})") from None

    def retention_for(self, database: str) -> RetentionRules:
        """The retention rules of `database` ([retention] with its [retention.DB] overrides)."""
        return self.retention.get(database) or RetentionRules()

    @property
    def default_database(self) -> str:
        return next(iter(self.databases))

    def secrets(self) -> list[str]:
        """Every secret value, so redaction can scrub them from any text."""
        values = [self.slack_bot_token, self.slack_signing_secret, self.slack_app_token]
        values += [db.url for db in self.databases.values()] + [t.url for t in self.targets.values()]
        values += [self.alerts.webhook_url] + [db.heartbeat_url for db in self.databases.values()]  # URLs carry tokens
        values += [key.text for key in self.signing.keys]
        values.append(self.health.metrics_token)
        return [v for v in values if v]


KNOWN_SECTIONS = {
    "state", "storage", "databases", "access", "channels", "alerts", "schedules", "retention", "health",
    "incidents", "jobs", "targets",
}


def load_settings(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read BACKUPBOT_CONFIG (or `path`), falling back to the embedded defaults."""
    env = os.environ if env is None else env
    path = path or env.get("BACKUPBOT_CONFIG")
    raw: dict = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return parse_settings(raw, env, config_path=str(path) if path else None)


def parse_settings(raw: Mapping, env: Mapping[str, str], config_path: str | None = None) -> Settings:
    unknown = set(raw) - KNOWN_SECTIONS
    if unknown:
        raise ConfigError(f"unknown section [{sorted(unknown)[0]}] (known: {', '.join(sorted(KNOWN_SECTIONS))})")
    state = _table(raw, "state")
    storage = _table(raw, "storage")
    access = _table(raw, "access")
    channels = _table(raw, "channels")
    databases = _databases(raw, env)
    return Settings(
        state_path=_str(state, "state.path", "path", "backupbot.db"),
        scratch_dir=_str(state, "state.scratch_dir", "scratch_dir", None),
        storage_url=_str(storage, "storage.url", "url", "file://./backups"),
        encrypt_to=_age_recipients(storage),
        identity_file=_str(storage, "storage.identity_file", "identity_file", None),
        signing=parse_signing(storage, env.get(KEY_ENV)),
        databases=databases,
        access=_access(access),
        channels=ChannelsConfig(
            alerts=_channel(channels, "alerts"),
            digest=_channel(channels, "digest"),
        ),
        alerts=_alerts(_table(raw, "alerts")),
        targets=parse_targets(raw.get("targets", {}), env),
        jobs=_jobs(_table(raw, "jobs")),
        schedules=parse_schedules(_table(raw, "schedules"), databases),
        retention=parse_retention(_table(raw, "retention"), databases),
        health=parse_health(_table(raw, "health"), env),
        incidents=parse_incidents(_table(raw, "incidents")),
        slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
        slack_signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
        slack_app_token=env.get("SLACK_APP_TOKEN") or None,
        slack_api_url=env.get("SLACK_API_URL") or None,
        config_path=config_path,
    )


def _table(raw: Mapping, key: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table [{key}], got {type(value).__name__}")
    return value


def _str(table: Mapping, full_key: str, key: str, default: str | None) -> str | None:
    value = table.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{full_key}: expected a non-empty string, got {value!r}")
    return value


def _databases(raw: Mapping, env: Mapping[str, str]) -> dict[str, DatabaseConfig]:
    tables = _table(raw, "databases") or {"main": {"url_env": "DATABASE_URL"}}
    databases = {}
    for name, table in tables.items():
        if not NAME_RE.match(name):
            raise ConfigError(f"databases.{name}: a database name is letters, digits, _ or - (max 63)")
        if not isinstance(table, dict):
            raise ConfigError(f"databases.{name}: expected a table [databases.{name}]")
        unknown = set(table) - {"url_env", "health_url", "heartbeat_url", "pgbackrest"}
        if unknown:
            raise ConfigError(f"databases.{name}.{sorted(unknown)[0]}: unknown key (known: url_env, health_url, "
                              "heartbeat_url, pgbackrest)")
        url_env = _str(table, f"databases.{name}.url_env", "url_env", "DATABASE_URL")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", url_env):
            raise ConfigError(f"databases.{name}.url_env: {url_env!r} is not an environment variable name")
        health_url = _str(table, f"databases.{name}.health_url", "health_url", None)
        if health_url and not health_url.startswith(("http://", "https://")):
            raise ConfigError(f"databases.{name}.health_url: expected an http(s) URL, got {health_url!r}")
        heartbeat_url = _http_url(table, f"databases.{name}.heartbeat_url", "heartbeat_url")
        databases[name] = DatabaseConfig(name=name, url_env=url_env, health_url=health_url, url=env.get(url_env),
                                         heartbeat_url=heartbeat_url,
                                         pgbackrest=_pgbackrest(table.get("pgbackrest"), f"databases.{name}.pgbackrest"))
    return databases


PGBACKREST_STANZA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # as commands.pg.pgbackrest checks it
PGBACKREST_GENERATED_KEYS = ("stanza", "repo_path", "pg_path", "pg_port", "pg_user", "pg_socket_path", "retention_full")


def _pgbackrest(value, path: str) -> PgBackRestSettings | None:
    """`pgbackrest = { config = FILE, stanza = NAME }` or `{ stanza, repo_path, pg_path, pg_port, ... }`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a table like {{ stanza = \"main\", repo_path = \"...\", pg_path = \"...\" }} "
                          "or { config = \"/etc/pgbackrest/pgbackrest.conf\", stanza = \"main\" }")
    stanza = value.get("stanza")
    if not isinstance(stanza, str) or not PGBACKREST_STANZA_RE.match(stanza):
        raise ConfigError(f"{path}.stanza: expected a stanza name (letters, digits, '_', '.' or '-'), got {stanza!r}")
    known = ("config", "stanza") if "config" in value else PGBACKREST_GENERATED_KEYS
    unknown = set(value) - set(known)
    if unknown:
        extra = " (with config = FILE, the file holds everything else)" if "config" in value else ""
        raise ConfigError(f"{path}.{sorted(unknown)[0]}: unknown key (known: {', '.join(known)}){extra}")

    def abs_path(key: str, required: bool) -> str | None:
        text = value.get(key)
        if text is None and not required:
            return None
        if text is None:
            raise ConfigError(f"{path}.{key}: missing (an absolute path), or give config = FILE and stanza instead")
        if not isinstance(text, str) or not text.startswith("/") or any(c in text for c in "\n\r\0") \
                or text != text.strip():
            raise ConfigError(f"{path}.{key}: expected an absolute path, got {text!r}")
        return text

    if "config" in value:
        return PgBackRestSettings(stanza=stanza, config=abs_path("config", True))
    pg_user = value.get("pg_user")
    if pg_user is not None and (not isinstance(pg_user, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$", pg_user)):
        raise ConfigError(f"{path}.pg_user: expected a PostgreSQL role name, got {pg_user!r}")
    pg_port = value.get("pg_port", 5432)
    if not isinstance(pg_port, int) or isinstance(pg_port, bool) or not 1 <= pg_port <= 65535:
        raise ConfigError(f"{path}.pg_port: expected a port number 1-65535, got {pg_port!r}")
    return PgBackRestSettings(
        stanza=stanza, repo_path=abs_path("repo_path", True), pg_path=abs_path("pg_path", True), pg_port=pg_port,
        pg_user=pg_user, pg_socket_path=abs_path("pg_socket_path", False),
        retention_full=_positive_int(value, "retention_full", 2, section=path),
    )


def _http_url(table: Mapping, full_key: str, key: str) -> str | None:
    value = _str(table, full_key, key, None)
    if value and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{full_key}: expected an http(s) URL")  # the URL may hold a token: not echoed
    return value


def _alerts(table: Mapping) -> AlertsConfig:
    unknown = set(table) - {"webhook_url"}
    if unknown:
        raise ConfigError(f"alerts.{sorted(unknown)[0]}: unknown key (known: webhook_url)")
    return AlertsConfig(webhook_url=_http_url(table, "alerts.webhook_url", "webhook_url"))


def _id_list(table: Mapping, key: str, pattern: re.Pattern = SLACK_ID_RE,
             kinds: tuple[str, str] = ("Slack user or usergroup IDs", "a Slack user (U…/W…) or usergroup (S…) ID")):
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"access.{key}: expected a list of {kinds[0]}")
    for v in value:
        if not pattern.match(v):
            raise ConfigError(f"access.{key}: {v!r} is not {kinds[1]}")
    return tuple(value)


def _positive_int(table: Mapping, key: str, default: int, section: str = "access") -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{section}.{key}: expected a whole number >= 1, got {value!r}")
    return value


def _bool(table: Mapping, full_key: str, key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{full_key}: expected true or false, got {value!r}")
    return value


def _jobs(table: Mapping) -> JobsConfig:
    unknown = set(table) - {"max_running"}
    if unknown:
        raise ConfigError(f"jobs.{sorted(unknown)[0]}: unknown key (known: max_running)")
    return JobsConfig(max_running=_positive_int(table, "max_running", 2, section="jobs"))


def _access(table: Mapping) -> AccessConfig:
    known = {"operators", "approvers", "required_approvals", "approval_ttl_minutes", "approve_emoji", "reject_emoji",
             "viewers", "approve_new_database_restores", "console_operators"}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"access.{sorted(unknown)[0]}: unknown key (known: {', '.join(sorted(known))})")
    approvers = _id_list(table, "approvers")
    required = _positive_int(table, "required_approvals", 1)
    plain_approvers = [a for a in approvers if not a.startswith("S")]
    if plain_approvers and len(plain_approvers) == len(approvers) and required > len(approvers):
        raise ConfigError(
            f"access.required_approvals: {required} approvals needed but only {len(approvers)} approvers listed"
        )
    return AccessConfig(
        operators=_id_list(table, "operators"),
        approvers=approvers,
        required_approvals=required,
        approval_ttl_minutes=_positive_int(table, "approval_ttl_minutes", 30),
        approve_emoji=_str(table, "access.approve_emoji", "approve_emoji", "white_check_mark").strip(":"),
        reject_emoji=_str(table, "access.reject_emoji", "reject_emoji", "x").strip(":"),
        viewers=_id_list(table, "viewers"),
        approve_new_database_restores=_bool(table, "access.approve_new_database_restores",
                                            "approve_new_database_restores", True),
        console_operators=_id_list(table, "console_operators", OS_USER_RE, ("OS user names", "an OS user name")),
    )


def _channel(table: Mapping, key: str) -> str | None:
    value = _str(table, f"channels.{key}", key, None)
    if value is not None and not CHANNEL_RE.match(value):
        raise ConfigError(f"channels.{key}: {value!r} is not a Slack channel ID (C…)")
    return value


def _age_recipients(storage: Mapping) -> tuple[str, ...]:
    """[storage] encrypt_to: age X25519 public keys (age1…), checked as the encryptor will read them."""
    if "encrypt_to" not in storage:
        return ()
    values = storage["encrypt_to"]
    if not isinstance(values, list) or not values:
        raise ConfigError('storage.encrypt_to: expected a list of age public keys, like ["age1..."]')
    keys: list[str] = []
    for index, value in enumerate(values):
        where, text = f"storage.encrypt_to[{index}]", value.strip() if isinstance(value, str) else ""
        if text.upper().startswith("AGE-SECRET-KEY-"):  # never echoed
            raise ConfigError(f"{where}: that is a private key: put its public key here (age1…, printed by "
                              "`age-keygen -y KEYFILE`) and the key file's path in storage.identity_file")
        try:
            x25519.Recipient.from_str(text)
        except (pyrage.RecipientError, ValueError):
            shown = text if len(text) <= 20 else text[:16] + "…"
            raise ConfigError(f"{where}: {shown or value!r} is not an age public key (age1…, printed by "
                              "`age-keygen -y KEYFILE`)") from None
        if text not in keys:
            keys.append(text)
    return tuple(keys)
