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
from commands.settings.values import accepted, known_keys, number, whole_number

KNOWN = ("emoji", "rpo_hours", "rto_critical_hours", "rto_full_hours", "timezone", "page_size")
MAX_HOURS = 24 * 365  # a recovery target beyond a year is a typo


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
    known_keys(table, "incidents", KNOWN)
    emoji = table.get("emoji", "stopwatch")
    if not isinstance(emoji, str) or not emoji.strip(": "):
        raise ConfigError(f"incidents.emoji: expected an emoji name like \"stopwatch\", got {emoji!r}")
    hours = {key: float(number(table, "incidents", key, default, 0, MAX_HOURS, above=True, what="a number of hours above 0"))
             for key, default in (("rpo_hours", 24), ("rto_critical_hours", 1), ("rto_full_hours", 4))}
    timezone = table.get("timezone", "UTC")
    if not isinstance(timezone, str):
        raise ConfigError(f"incidents.timezone: expected an IANA zone name like \"Europe/Paris\", got {timezone!r}")
    accepted(timezone, "incidents.timezone", zone_named, UsageError)
    page_size = whole_number(table, "incidents", "page_size", 50, 5, 200)
    return IncidentSettings(emoji=emoji.strip(": "), timezone=timezone, page_size=page_size, **hours)


def zone_named(name: str) -> ZoneInfo:
    """An IANA zone, or a UsageError that says what is expected."""
    try:
        if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise UsageError(f"unknown time zone {shown!r}: use an IANA name like UTC, Europe/Paris or America/New_York") from None
