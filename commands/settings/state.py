"""[state]: where the SQLite state file and the private scratch folder live.

```toml
[state]
path = "backupbot.db"
scratch_dir = "/var/lib/backupbot/scratch"   # optional; the default is `scratch` beside the state file
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from commands.settings.values import string


@dataclass(frozen=True)
class StateConfig:
    path: str = "backupbot.db"
    scratch_dir: str | None = None  # private folder for restore files; None: `scratch` beside the state file


def parse_state(table: Mapping) -> StateConfig:
    return StateConfig(path=string(table, "state", "path", "backupbot.db"),
                       scratch_dir=string(table, "state", "scratch_dir", None))
