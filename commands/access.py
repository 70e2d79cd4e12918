"""Who may do what: the one place that reads [access]."""

from __future__ import annotations

from commands.context import Services
from commands.errors import NotAllowedError

ANYONE, OPERATOR = "anyone", "operator"


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
    access = services.settings.access
    return access.anyone_may_operate or user in expand_members(services, access.operators)


def is_approver(services: Services, user: str) -> bool:
    return user in expand_members(services, services.settings.access.approvers)


def require(services: Services, permission: str, user: str, command: str) -> None:
    if permission == OPERATOR and not is_operator(services, user):
        raise NotAllowedError(f"<@{user}> is not an operator: only operators may run {command}. "
                              "Ask an admin to add you to [access] operators.")
