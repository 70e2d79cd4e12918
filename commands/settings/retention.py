"""[retention]: grandfather-father-son rules per database, parsed once when the config loads.

```toml
[retention]               # every database
keep_last = 7
max_age_days = 30         # 0: no maximum age; a ceiling only a legal hold (`/backup keep`) passes
ceiling_warning_days = 3  # alert this long before a backup with nothing newer reaches the ceiling
[retention.main]          # overrides for one database
keep_monthly = 12
```
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from commands.errors import ConfigError
from commands.settings.values import known_keys, whole_number

RULE_KEYS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "max_age_days", "ceiling_warning_days")


@dataclass(frozen=True)
class RetentionRules:
    keep_last: int = 7
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 0
    max_age_days: int | None = 30
    ceiling_warning_days: int = 3


def retention_rules(raw: Mapping, database: str) -> RetentionRules:
    """`[retention]` applies to every database; `[retention.DB]` overrides it for one."""
    values: dict = {}
    for scope, table in (("retention", {k: v for k, v in raw.items() if not isinstance(v, dict)}),
                         (f"retention.{database}", raw.get(database) or {})):
        for key in table:  # one key at a time, in the file's order: the first bad key is the one named
            known_keys({key: None}, scope, RULE_KEYS)
            values[key] = whole_number(table, scope, key, 0, low=0)
    if values.get("max_age_days") == 0:
        values["max_age_days"] = None
    return RetentionRules(**values)


def parse_retention(raw: Mapping, databases: Iterable[str]) -> dict[str, RetentionRules]:
    """The rules of every configured database; a `[retention.X]` for no database is an error."""
    databases = list(databases)
    for key, value in raw.items():
        if isinstance(value, dict) and key not in databases:
            raise ConfigError(f"retention.{key}: no database {key!r} is configured")
    return {database: retention_rules(raw, database) for database in databases}
