"""[alerts]: a webhook every alert is also posted to, for when Slack is down.

```toml
[alerts]
webhook_url = "https://alerts.example.com/hook/TOKEN"   # a secret: never echoed in a message
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from commands.settings.values import http_url, known_keys


@dataclass(frozen=True)
class AlertsConfig:
    webhook_url: str | None = None  # JSON POST of every alert (failures, RPO breaches), for when Slack is down


def parse_alerts(table: Mapping) -> AlertsConfig:
    known_keys(table, "alerts", ("webhook_url",))
    return AlertsConfig(webhook_url=http_url(table, "alerts", "webhook_url"))
