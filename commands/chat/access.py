"""Who may do what: the one place that reads [access].

Access fails closed: with no `[access] operators` configured nobody may run an operator command,
and `/db-health` (it shows pids, users and query shapes) is for operators and `[access] viewers`.
"""

from __future__ import annotations

from commands.chat.context import Services
from commands.errors import NotAllowedError
from commands.settings import Settings

ANYONE, VIEWER, OPERATOR = "anyone", "viewer", "operator"

HOW_TO_CONFIGURE = ('Add Slack user (U…) or usergroup (S…) IDs to the config, for example '
                    '`[access] operators = ["U0123", "S0456"]`, and restart the bot.')


def expand_members(services: Services, ids: tuple[str, ...]) -> set[str]:
    """User ids listed directly plus the members of listed usergroups (S…)."""
    users = set()
    for entry in ids:
        if entry.startswith("S"):
            users |= services.group_members(entry)
        else:
            users.add(entry)
    return users


def is_operator(services: Services, user: str) -> bool:
    return user in expand_members(services, services.settings.access.operators)


def is_viewer(services: Services, user: str) -> bool:
    """Operators and `[access] viewers` may look at /db-health."""
    access = services.settings.access
    return is_operator(services, user) or user in expand_members(services, access.viewers)


def is_approver(services: Services, user: str) -> bool:
    return user in expand_members(services, services.settings.access.approvers)


def access_problems(settings: Settings) -> list[str]:
    """What `backupbot check` fails on and start-up warns about."""
    if not settings.access.operators:
        return ["no operators are configured, so nobody may run /backup, /restore or other operator commands. "
                + HOW_TO_CONFIGURE]
    return []


def require(services: Services, permission: str, user: str, command: str) -> None:
    if permission == ANYONE:
        return
    if permission == VIEWER and is_viewer(services, user):
        return
    if permission not in (OPERATOR, VIEWER):
        raise NotAllowedError(f"{command} needs an unknown permission {permission!r}; nobody may run it")
    if permission == OPERATOR and is_operator(services, user):
        return
    if not services.settings.access.operators:
        who = "operators or viewers" if permission == VIEWER else "operators"
        raise NotAllowedError(f"{command} is refused: no operators are configured, so nobody may run it "
                              f"(only {who} may). {HOW_TO_CONFIGURE}")
    if permission == VIEWER:
        raise NotAllowedError(f"<@{user}> is not an operator or viewer: only they may run {command}. "
                              "Ask an admin to add you to [access] viewers.")
    raise NotAllowedError(f"<@{user}> is not an operator: only operators may run {command}. "
                          "Ask an admin to add you to [access] operators.")
