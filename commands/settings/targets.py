"""[targets.NAME]: servers that are not backed up but may receive restores (a DR standby, staging).

Like databases, a target names the environment variable holding its URL, so the config file can
be shown without leaking credentials.

```toml
[targets.standby]
url_env = "STANDBY_URL"
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from commands.errors import ConfigError
from commands.settings.values import env_name, known_keys, named_tables


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
    """`raw` is the whole [targets] value: tables [targets.NAME], each naming the variable with its URL."""
    if not isinstance(raw, dict):
        raise ConfigError(f"targets: expected tables [targets.NAME], got {type(raw).__name__}")
    targets = {}
    for name, table in named_tables(raw, "targets", "target"):
        known_keys(table, f"targets.{name}", ("url_env",))
        url_env = env_name(table.get("url_env"), f"targets.{name}.url_env", "an environment variable name")
        targets[name] = TargetConfig(name=name, url_env=url_env, url=env.get(url_env) or None)
    return targets
