"""[jobs]: how many backups, restores and drills run at once; the rest queue, told their place; and how
long a job may move no bytes before the watchdog stops it (commands/chat/stall.py).

```toml
[jobs]
max_running = 2
stall_minutes = 30
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from commands.settings.values import known_keys, whole_number


@dataclass(frozen=True)
class JobsConfig:
    max_running: int = 2  # backups, restores and drills running at once, across all databases
    stall_minutes: int = 30  # a job that moves no bytes this long is stopped, reported failed and alerted


def parse_jobs(table: Mapping) -> JobsConfig:
    known_keys(table, "jobs", ("max_running", "stall_minutes"))
    return JobsConfig(max_running=whole_number(table, "jobs", "max_running", 2),
                      stall_minutes=whole_number(table, "jobs", "stall_minutes", 30, 1, 24 * 60))
