"""[health]: the /db-health thresholds and timeouts, parsed once when the config loads.

```toml
[health]
rpo_hours = 24
connect_timeout_seconds = 5
statement_timeout_ms = 5000
```

Every key is a number >= 0; an unknown key or a bad value is a ConfigError naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from commands.errors import ConfigError


@dataclass(frozen=True)
class HealthSettings:
    connect_timeout_seconds: float = 5
    statement_timeout_ms: float = 5000
    rpo_hours: float = 24
    connections_warn_pct: float = 80
    connections_critical_pct: float = 95
    idle_in_transaction_warn_seconds: float = 60
    long_query_warn_seconds: float = 60
    long_query_critical_seconds: float = 600
    cache_hit_warn: float = 0.95
    cache_hit_critical: float = 0.90
    dead_tuple_warn_ratio: float = 0.2
    growth_warn_pct: float = 20
    drill_warn_days: float = 8
    archive_rpo_minutes: float = 15  # an archived database breaches its RPO when no WAL was archived for this long

    def connect_options(self) -> dict:
        """psycopg.connect keywords that bound how long a health query can take."""
        return {"connect_timeout": int(self.connect_timeout_seconds), "application_name": "backupbot-health",
                "options": f"-c statement_timeout={int(self.statement_timeout_ms)} -c lock_timeout=1000"}


HEALTH_KEYS = tuple(sorted(f.name for f in fields(HealthSettings)))


def parse_health(table: Mapping) -> HealthSettings:
    unknown = sorted(set(table) - set(HEALTH_KEYS))
    if unknown:
        raise ConfigError(f"health.{unknown[0]}: unknown key (known: {', '.join(HEALTH_KEYS)})")
    for key, value in table.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"health.{key}: expected a number >= 0, got {value!r}")
    return HealthSettings(**table)
