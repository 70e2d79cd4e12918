"""Configuration: a TOML file plus the environment, validated once at start into typed frozen objects.

Each TOML section has its module here, in one style: a frozen dataclass and `parse_<section>(table, ...)`,
which raises a ConfigError naming the key; the readers they share (one for each kind of value) are in
values.py. This module puts them together into `Settings`, and callers import every type from here.

DSNs never live in the file: a database names the environment variable that holds its URL, so
the file can be committed and shown without leaking credentials.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from commands.errors import ConfigError, UnknownDatabaseError
from commands.settings.access import AccessConfig, parse_access
from commands.settings.alerts import AlertsConfig, parse_alerts
from commands.settings.channels import ChannelsConfig, parse_channels
from commands.settings.databases import DatabaseConfig, PgBackRestSettings, parse_databases
from commands.settings.health import HealthSettings, parse_health
from commands.settings.incidents import IncidentSettings, parse_incidents
from commands.settings.jobs import JobsConfig, parse_jobs
from commands.settings.restore import RestoreSettings, parse_restore
from commands.settings.retention import RetentionRules, parse_retention
from commands.settings.schedules import ScheduledJob, parse_schedules
from commands.settings.state import StateConfig, parse_state
from commands.settings.storage import StorageConfig, parse_storage
from commands.settings.targets import TargetConfig, parse_targets
from commands.settings.values import section
from commands.signing import KEY_ENV, Keyring

__all__ = [
    "AccessConfig", "AlertsConfig", "ChannelsConfig", "DatabaseConfig", "HealthSettings", "IncidentSettings",
    "JobsConfig", "PgBackRestSettings", "RestoreSettings", "RetentionRules", "ScheduledJob", "Settings", "StateConfig",
    "StorageConfig", "TargetConfig", "find_config", "load_settings", "parse_settings",
]

# Where every subcommand looks for its config when neither --config nor $BACKUPBOT_CONFIG names one, in order.
# `backupbot init` writes the first by default, so what it writes is what `check` and `run` then read.
CONFIG_SEARCH = ("backupbot.toml", "/etc/backupbot/backupbot.toml")

KNOWN_SECTIONS = {
    "state", "storage", "databases", "access", "channels", "alerts", "schedules", "retention", "health",
    "incidents", "jobs", "targets", "restore",
}
T = TypeVar("T")


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
    schedules: tuple[ScheduledJob, ...] = ()
    retention: Mapping[str, RetentionRules] = field(default_factory=dict)  # per configured database
    health: HealthSettings = field(default_factory=HealthSettings)
    incidents: IncidentSettings = field(default_factory=IncidentSettings)
    restore: RestoreSettings = field(default_factory=RestoreSettings)  # [restore] copy_ttl_hours
    targets: Mapping[str, TargetConfig] = field(default_factory=dict)  # servers that may receive restores
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str | None = None
    config_path: str | None = None

    def target(self, name: str) -> TargetConfig:
        return _named(self.targets, name, "unknown restore target {name!r} (configured in [targets]: {known})")

    def database(self, name: str) -> DatabaseConfig:
        return _named(self.databases, name, "unknown database {name!r} (configured: {known})")

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
        values += [self.health.metrics_token, self.health.checkpoint_token]
        return [v for v in values if v]


def _named(configured: Mapping[str, T], name: str, unknown: str) -> T:
    if name in configured:
        return configured[name]
    raise UnknownDatabaseError(unknown.format(name=name, known=", ".join(sorted(configured)) or "none"))


def find_config(path: str | os.PathLike | None, env: Mapping[str, str],
                search: tuple[str, ...] = CONFIG_SEARCH) -> str | None:
    """The one order for every subcommand: `--config`, then $BACKUPBOT_CONFIG, then the first of `search`
    that exists (./backupbot.toml, /etc/backupbot/backupbot.toml); None: the embedded defaults."""
    named = path or env.get("BACKUPBOT_CONFIG")
    if named:
        return str(named)
    return next((candidate for candidate in search if Path(candidate).is_file()), None)


def load_settings(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                  search: tuple[str, ...] | None = None) -> Settings:
    """Read the config `find_config` names, or the embedded defaults when there is none."""
    env = os.environ if env is None else env
    path = find_config(path, env, CONFIG_SEARCH if search is None else search)
    raw: dict = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return parse_settings(raw, env, config_path=str(path) if path else None)


def default_storage_url(state_path: str) -> str:
    """Without `[storage] url`, backups go to `backups` beside the state file (never `/backups` at the root)."""
    base = Path.cwd() if state_path == ":memory:" else Path(state_path).expanduser().absolute().parent
    return (base / "backups").as_uri()


def parse_settings(raw: Mapping, env: Mapping[str, str], config_path: str | None = None) -> Settings:
    """Every section, in the order their errors are reported: the first bad key stops the load."""
    unknown = set(raw) - KNOWN_SECTIONS
    if unknown:
        raise ConfigError(f"unknown section [{sorted(unknown)[0]}] (known: {', '.join(sorted(KNOWN_SECTIONS))})")
    tables = {name: section(raw, name) for name in ("state", "storage", "access", "channels")}
    databases = parse_databases(section(raw, "databases"), env)
    state = parse_state(tables["state"])
    storage = parse_storage(tables["storage"], env.get(KEY_ENV), default_url=default_storage_url(state.path))
    targets = parse_targets(raw.get("targets", {}), env)
    schedules = parse_schedules(section(raw, "schedules"), databases)
    for job in schedules:
        if job.target is not None and job.target not in targets:
            raise ConfigError(f"schedules.{job.database}.{job.kind}.target: no [targets.{job.target}] is configured")
    return Settings(
        state_path=state.path,
        scratch_dir=state.scratch_dir,
        storage_url=storage.url,
        encrypt_to=storage.encrypt_to,
        identity_file=storage.identity_file,
        signing=storage.signing,
        databases=databases,
        access=parse_access(tables["access"]),
        channels=parse_channels(tables["channels"]),
        alerts=parse_alerts(section(raw, "alerts")),
        targets=targets,
        jobs=parse_jobs(section(raw, "jobs")),
        schedules=schedules,
        retention=parse_retention(section(raw, "retention"), databases),
        health=parse_health(section(raw, "health"), env),
        incidents=parse_incidents(section(raw, "incidents")),
        restore=parse_restore(section(raw, "restore")),
        slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
        slack_signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
        slack_app_token=env.get("SLACK_APP_TOKEN") or None,
        slack_api_url=env.get("SLACK_API_URL") or None,
        config_path=config_path,
    )
