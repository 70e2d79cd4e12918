"""[channels]: where alerts and the daily digest are posted.

```toml
[channels]
alerts = "C0ALERTS"
digest = "C0DIGEST"
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from commands.errors import ConfigError
from commands.settings.values import string

CHANNEL_RE = re.compile(r"^[CGD][A-Z0-9]{2,}$")


@dataclass(frozen=True)
class ChannelsConfig:
    alerts: str | None = None
    digest: str | None = None


def parse_channels(table: Mapping) -> ChannelsConfig:
    return ChannelsConfig(alerts=_channel(table, "alerts"), digest=_channel(table, "digest"))


def _channel(table: Mapping, key: str) -> str | None:
    value = string(table, "channels", key, None)
    if value is not None and not CHANNEL_RE.match(value):
        raise ConfigError(f"channels.{key}: {value!r} is not a Slack channel ID (C…)")
    return value
