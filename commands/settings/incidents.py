"""[incidents], parsed once when the config loads: the :stopwatch: emoji, the recovery targets, the display
zone, the timeline page size.

Defaults are the runbook's: RPO 24 h, RTO 1 h for critical data loss (severity 1), 4 h for a full
restore (any other severity). A bad value is a ConfigError naming the key.

```toml
[incidents]
emoji = "stopwatch"
rpo_hours = 24
rto_critical_hours = 1
rto_full_hours = 4
timezone = "UTC"          # how times show in Slack and how `note --at HH:MM` is read
page_size = 50
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from commands.errors import ConfigError, UsageError

KNOWN = ("emoji", "rpo_hours", "rto_critical_hours", "rto_full_hours", "timezone", "page_size")


@dataclass(frozen=True)
class IncidentSettings:
    emoji: str = "stopwatch"
    rpo_hours: float = 24
    rto_critical_hours: float = 1
    rto_full_hours: float = 4
    timezone: str = "UTC"
    page_size: int = 50

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def rto_hours(self, severity: int) -> float:
        return self.rto_critical_hours if severity == 1 else self.rto_full_hours


def parse_incidents(table: Mapping) -> IncidentSettings:
    unknown = sorted(set(table) - set(KNOWN))
    if unknown:
        raise ConfigError(f"incidents.{unknown[0]}: unknown key (known: {', '.join(KNOWN)})")
    emoji = table.get("emoji", "stopwatch")
    if not isinstance(emoji, str) or not emoji.strip(": "):
        raise ConfigError(f"incidents.emoji: expected an emoji name like \"stopwatch\", got {emoji!r}")
    hours = {key: _hours(table, key, default) for key, default in
             (("rpo_hours", 24), ("rto_critical_hours", 1), ("rto_full_hours", 4))}
    timezone = table.get("timezone", "UTC")
    if not isinstance(timezone, str):
        raise ConfigError(f"incidents.timezone: expected an IANA zone name like \"Europe/Paris\", got {timezone!r}")
    try:
        zone_named(timezone)
    except UsageError as exc:
        raise ConfigError(f"incidents.timezone: {exc}") from None
    page_size = table.get("page_size", 50)
    if not isinstance(page_size, int) or isinstance(page_size, bool) or not 5 <= page_size <= 200:
        raise ConfigError(f"incidents.page_size: expected a whole number from 5 to 200, got {page_size!r}")
    return IncidentSettings(emoji=emoji.strip(": "), timezone=timezone, page_size=page_size, **hours)


def _hours(table: Mapping, key: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 24 * 365:
        raise ConfigError(f"incidents.{key}: expected a number of hours above 0, got {value!r}")
    return float(value)


def zone_named(name: str) -> ZoneInfo:
    """An IANA zone, or a UsageError that says what is expected."""
    try:
        if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise UsageError(f"unknown time zone {shown!r}: use an IANA name like UTC, Europe/Paris or America/New_York") from None
