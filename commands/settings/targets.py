"""`[targets.NAME]`: servers that are not backed up but may receive restores (a DR standby, staging).

Like databases, a target names the environment variable holding its URL, so the config file can
be shown without leaking credentials.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from commands.errors import ConfigError

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class TargetConfig:
    name: str
    url_env: str
    url: str | None = None  # resolved from url_env; never logged

    def require_url(self) -> str:
        if not self.url:
            raise ConfigError(f"targets.{self.name}: environment variable {self.url_env} is not set")
        return self.url


def parse_targets(raw: object, env: Mapping[str, str]) -> dict[str, TargetConfig]:
    if not isinstance(raw, dict):
        raise ConfigError(f"targets: expected tables [targets.NAME], got {type(raw).__name__}")
    targets = {}
    for name, table in raw.items():
        if not NAME_RE.match(name):
            raise ConfigError(f"targets.{name}: a target name is letters, digits, _ or - (max 63)")
        if not isinstance(table, dict):
            raise ConfigError(f"targets.{name}: expected a table [targets.{name}]")
        unknown = set(table) - {"url_env"}
        if unknown:
            raise ConfigError(f"targets.{name}.{sorted(unknown)[0]}: unknown key (known: url_env)")
        url_env = table.get("url_env")
        if not isinstance(url_env, str) or not ENV_RE.match(url_env):
            raise ConfigError(f"targets.{name}.url_env: expected an environment variable name, got {url_env!r}")
        targets[name] = TargetConfig(name=name, url_env=url_env, url=env.get(url_env) or None)
    return targets
