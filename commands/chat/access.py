"""Who may do what: the one place that reads [access].

Access fails closed: with no `[access] operators` configured nobody may run an operator command,
and `/db-health` (it shows pids, users and query shapes) is for operators and `[access] viewers`.

The terminal console outside the demo is not a Slack user: it is the OS account that runs it,
which may operate only when `[access] console_operators` names it, and which is never an approver,
so nobody with a shell can approve a restore by claiming an approver's Slack ID.
"""

from __future__ import annotations

from commands.chat.context import Actor, Services
from commands.errors import NotAllowedError
from commands.settings import Settings

ANYONE, VIEWER, OPERATOR = "anyone", "viewer", "operator"

HOW_TO_CONFIGURE_CONSOLE = 'Add OS user names to the config, for example `[access] console_operators = ["alice"]`.'
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


def is_operator(services: Services, actor: Actor) -> bool:
    if not actor.slack_identity:
        return actor.os_user is not None and actor.os_user in services.settings.access.console_operators
    return actor.user in expand_members(services, services.settings.access.operators)


def is_viewer(services: Services, actor: Actor) -> bool:
    """Operators and `[access] viewers` may look at /db-health (viewers are Slack users)."""
    access = services.settings.access
    return is_operator(services, actor) or (actor.slack_identity and actor.user in expand_members(services, access.viewers))


def is_approver(services: Services, actor: Actor) -> bool:
    """Approvals come from approvers' reactions in Slack (or a demo's played users), never from an OS account."""
    return actor.slack_identity and actor.user in expand_members(services, services.settings.access.approvers)


def require_approvable_where_asked(actor: Actor, what: str) -> None:
    """A request that needs approval is approved by reactions in Slack: asked from a console outside the
    demo, where no approver can react, it would only wait until it expired. Refused before it is posted."""
    if not actor.slack_identity:
        raise NotAllowedError(f"{what} needs approvers' reactions, which only reach a request posted in Slack: ask "
                              "for it there (a --dry-run plan works here)")


def access_problems(settings: Settings) -> list[str]:
    """What `backupbot check` fails on and start-up warns about."""
    if not settings.access.operators:
        return ["no operators are configured, so nobody may run /backup, /restore or other operator commands. "
                + HOW_TO_CONFIGURE]
    return []


def require(services: Services, permission: str, actor: Actor, command: str) -> None:
    user = actor.user
    if permission == ANYONE:
        return
    if permission == VIEWER and is_viewer(services, actor):
        return
    if permission not in (OPERATOR, VIEWER):
        raise NotAllowedError(f"{command} needs an unknown permission {permission!r}; nobody may run it")
    if permission == OPERATOR and is_operator(services, actor):
        return
    if not actor.slack_identity:
        if not services.settings.access.console_operators:
            raise NotAllowedError(f"{command} is refused: no console operators are configured, so nobody may run it "
                                  f"from the console. {HOW_TO_CONFIGURE_CONSOLE}")
        raise NotAllowedError(f"OS user {actor.os_user} is not allowed to run {command} from the console: only the OS "
                              "users [access] console_operators names may. Ask an admin to add you there.")
    if not services.settings.access.operators:
        who = "operators or viewers" if permission == VIEWER else "operators"
        raise NotAllowedError(f"{command} is refused: no operators are configured, so nobody may run it "
                              f"(only {who} may). {HOW_TO_CONFIGURE}")
    if permission == VIEWER:
        raise NotAllowedError(f"<@{user}> is not an operator or viewer: only they may run {command}. "
                              "Ask an admin to add you to [access] viewers.")
    raise NotAllowedError(f"<@{user}> is not an operator: only operators may run {command}. "
                          "Ask an admin to add you to [access] operators.")
