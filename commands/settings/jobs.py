"""[jobs]: how many backups, restores and drills run at once; the rest queue, told their place.

```toml
[jobs]
max_running = 2
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from commands.settings.values import known_keys, whole_number


@dataclass(frozen=True)
class JobsConfig:
    max_running: int = 2  # backups, restores and drills running at once, across all databases


def parse_jobs(table: Mapping) -> JobsConfig:
    known_keys(table, "jobs", ("max_running",))
    return JobsConfig(max_running=whole_number(table, "jobs", "max_running", 2))
