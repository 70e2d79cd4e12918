"""[health]: the /db-health thresholds and timeouts, and who may read /metrics, parsed once when the config loads.

```toml
[health]
rpo_hours = 24
connect_timeout_seconds = 5
statement_timeout_ms = 5000
metrics_token_env = "BACKUPBOT_METRICS_TOKEN"   # /metrics on the Slack port needs `Authorization: Bearer TOKEN`
checkpoint_token_env = "BACKUPBOT_CHECKPOINT_TOKEN"   # POST /checkpoint (a pipeline's backup) needs this token
```

/metrics names every database, its backups' sizes and times, and failures: an attacker's map. So the
public Slack port serves it only to a scraper that presents the bearer token, and the token, a
secret, comes from the environment variable the file names, never from the file itself. Every other
key is a number >= 0; an unknown key or a bad value is a ConfigError naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from commands.errors import ConfigError
from commands.settings.values import env_name, known_keys, number


@dataclass(frozen=True)
class HealthSettings:
    """The limits of /db-health's checks (commands/health/checks.py), each a number >= 0 in the unit its name says."""

    connect_timeout_seconds: float = 5  # how long one health query may take
    statement_timeout_ms: float = 5000
    rpo_hours: float = 24  # the newest backup may be this old
    # the share of max_connections in use, how long a session may sit idle in a transaction, how long a query may run
    connections_warn_pct: float = 80
    connections_critical_pct: float = 95
    idle_in_transaction_warn_seconds: float = 60
    long_query_warn_seconds: float = 60
    long_query_critical_seconds: float = 600
    # the share of reads served from shared buffers below which it warns, then is critical
    cache_hit_warn: float = 0.95
    cache_hit_critical: float = 0.90
    dead_tuple_warn_ratio: float = 0.2  # dead tuples of all tuples, in the table with the most dead ones
    growth_warn_pct: float = 20  # the database's growth since the sample before
    drill_warn_days: float = 8  # the newest drill may be this old
    archive_rpo_minutes: float = 15  # an archived database breaches its RPO when no WAL was archived for this long
    # /healthz fails once the Socket Mode connection to Slack has been down this long (reconnects take seconds)
    socket_mode_grace_seconds: float = 60
    metrics_token_env: str | None = None  # names the variable holding the bearer token /metrics asks for
    metrics_token: str | None = field(default=None, repr=False, compare=False)  # its value, from the environment
    checkpoint_token_env: str | None = None  # names the variable holding the token POST /checkpoint asks for
    checkpoint_token: str | None = field(default=None, repr=False, compare=False)

    def connect_options(self) -> dict:
        """psycopg.connect keywords that bound how long a health query can take."""
        return {"connect_timeout": int(self.connect_timeout_seconds), "application_name": "backupbot-health",
                "options": f"-c statement_timeout={int(self.statement_timeout_ms)} -c lock_timeout=1000"}


TOKEN_KEYS = ("metrics_token_env", "checkpoint_token_env")
HEALTH_KEYS = tuple(sorted(f.name for f in fields(HealthSettings) if f.name not in ("metrics_token", "checkpoint_token")))
MIN_TOKEN_LENGTH = 16  # a guessable token would be no better than none


def parse_health(table: Mapping, env: Mapping[str, str] | None = None) -> HealthSettings:
    known_keys(table, "health", HEALTH_KEYS)
    numbers = {key: number(table, "health", key, None) for key in table if key not in TOKEN_KEYS}
    tokens: dict = {}
    for key, what in (("metrics_token_env", "/metrics"), ("checkpoint_token_env", "POST /checkpoint")):
        if table.get(key) is not None:
            tokens[key], tokens[key.removesuffix("_env")] = _token(table[key], env, key, what)
    return HealthSettings(**numbers, **tokens)


def _token(value, env: Mapping[str, str] | None, key: str, what: str) -> tuple[str, str]:
    """(variable name, its token): the token is read from the environment, never from the file."""
    name = env_name(value, f"health.{key}", "the name of an environment variable")
    token = (env or {}).get(name) or ""
    if not token.strip():
        raise ConfigError(f"health.{key}: environment variable {name} is not set (the bearer token "
                          f"{what} asks for)")
    if len(token.strip()) < MIN_TOKEN_LENGTH or token != token.strip():
        raise ConfigError(f"health.{key}: the token in {name} must be at least {MIN_TOKEN_LENGTH} "
                          "characters, without surrounding spaces (e.g. `openssl rand -hex 32`)")
    return name, token
