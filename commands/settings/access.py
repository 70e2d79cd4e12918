"""[access]: who may operate, approve and view, and how restores are approved.

```toml
[access]
operators = ["U0123", "S0456"]     # user or usergroup IDs allowed to run /backup and /restore
approvers = ["U0789"]
required_approvals = 1
approval_ttl_minutes = 30
viewers = ["U0VIEW"]               # may run /db-health too
approve_new_database_restores = true
console_operators = ["alice"]      # OS users whose `backupbot console` may operate (it never approves)
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from commands.errors import ConfigError
from commands.settings.values import boolean, id_list, known_keys, string, whole_number

SLACK_ID_RE = re.compile(r"^[UWS][A-Z0-9]{2,}$")
OS_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")  # a POSIX account name, as useradd takes it
ACCESS_KEYS = ("approval_ttl_minutes", "approve_emoji", "approve_new_database_restores", "approvers",
               "console_operators", "operators", "reject_emoji", "required_approvals", "viewers")


@dataclass(frozen=True)
class AccessConfig:
    operators: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()
    required_approvals: int = 1
    approval_ttl_minutes: int = 30
    approve_emoji: str = "white_check_mark"
    reject_emoji: str = "x"
    viewers: tuple[str, ...] = ()  # may run /db-health besides the operators
    approve_new_database_restores: bool = True  # `/restore --into NEW_DB` copies production data
    console_operators: tuple[str, ...] = ()  # OS accounts whose `backupbot console` may operate (it never approves)


def parse_access(table: Mapping) -> AccessConfig:
    known_keys(table, "access", ACCESS_KEYS)
    approvers = _slack_ids(table, "approvers")
    required = whole_number(table, "access", "required_approvals", 1)
    plain_approvers = [a for a in approvers if not a.startswith("S")]
    if plain_approvers and len(plain_approvers) == len(approvers) and required > len(approvers):
        raise ConfigError(
            f"access.required_approvals: {required} approvals needed but only {len(approvers)} approvers listed"
        )
    return AccessConfig(
        operators=_slack_ids(table, "operators"),
        approvers=approvers,
        required_approvals=required,
        approval_ttl_minutes=whole_number(table, "access", "approval_ttl_minutes", 30),
        approve_emoji=string(table, "access", "approve_emoji", "white_check_mark").strip(":"),
        reject_emoji=string(table, "access", "reject_emoji", "x").strip(":"),
        viewers=_slack_ids(table, "viewers"),
        approve_new_database_restores=boolean(table, "access", "approve_new_database_restores", True),
        console_operators=id_list(table, "access", "console_operators", OS_USER_RE, "OS user names", "an OS user name"),
    )


def _slack_ids(table: Mapping, key: str) -> tuple[str, ...]:
    return id_list(table, "access", key, SLACK_ID_RE, "Slack user or usergroup IDs",
                   "a Slack user (U…/W…) or usergroup (S…) ID")
