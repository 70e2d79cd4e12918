"""[restore]: how long a point-in-time copy may run before the bot stops and removes it.

```toml
[restore]
copy_ttl_hours = 24   # a copy `/restore --time` left running is dropped this long after it was verified
```

A copy is a whole cluster of production data in the clear, on this host: it should not outlive the
question it was restored to answer. `/restore drop-copy ID` drops it sooner. A number > 0 (hours,
fractions allowed); an unknown key or a bad value is a ConfigError naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from commands.settings.values import known_keys, number


@dataclass(frozen=True)
class RestoreSettings:
    copy_ttl_hours: float = 24


def parse_restore(table: Mapping) -> RestoreSettings:
    known_keys(table, "restore", ("copy_ttl_hours",))
    return RestoreSettings(copy_ttl_hours=number(table, "restore", "copy_ttl_hours", 24, low=0, above=True,
                                                 what="a number of hours > 0"))
