"""[jobs]: how many backups, restores and drills run at once; the rest queue, told their place; how
long a job may move no bytes before the watchdog stops it (commands/chat/stall.py); and how long a
stopping bot (SIGTERM) lets running jobs finish before it stops them and records them interrupted.


```toml
[jobs]
max_running = 2
stall_minutes = 30
stop_grace_seconds = 60   # keep it under systemd's TimeoutStopSec and `docker stop --time`
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from commands.settings.values import known_keys, number, whole_number


@dataclass(frozen=True)
class JobsConfig:
    max_running: int = 2  # backups, restores and drills running at once, across all databases
    stall_minutes: int = 30  # a job that moves no bytes this long is stopped, reported failed and alerted
    stop_grace_seconds: float = 60  # on SIGTERM, running jobs get this long to finish (bot/shutdown.py)


def parse_jobs(table: Mapping) -> JobsConfig:
    known_keys(table, "jobs", ("max_running", "stall_minutes", "stop_grace_seconds"))
    return JobsConfig(max_running=whole_number(table, "jobs", "max_running", 2),
                      stall_minutes=whole_number(table, "jobs", "stall_minutes", 30, 1, 24 * 60),
                      stop_grace_seconds=number(table, "jobs", "stop_grace_seconds", 60))
