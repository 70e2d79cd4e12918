"""The roles a restore creates on the receiving server: listed in the plan, privileged ones refused
unless the request opts in, created from the approved plan, and the opt-in written to the audit log.

Refusing a plan whose roles are privileged, rather than creating the roles without the privilege,
is deliberate: a role stripped of SUPERUSER or of pg_execute_server_program would make the restore
look successful while the restored database behaves differently, and a forged definition would still
have chosen the names. A refusal says which role, which privilege, and how to go on, before anyone
is asked and before anything is created.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from commands.chat.context import Actor, Services
from commands.errors import BackupbotError, NotAllowedError
from commands.incident.audit import record_event
from commands.pg.globals import missing_roles, role_definitions, roles_in_database
from commands.pg.roles import (
    PlannedRole,
    RoleDefinition,
    RolesCreated,
    connect,
    create_roles,
    parse_definitions,
    plan_roles,
    show_name,
)
from state.backups import BackupRecord

ALLOW_FLAG = "--allow-privileged-roles"


def planned_roles(values: Sequence[dict]) -> list[PlannedRole]:
    return [PlannedRole.from_dict(value) for value in values]


def plan_missing_roles(server_dsn: str, definitions: Sequence[RoleDefinition]) -> list[PlannedRole]:
    """The definitions the receiving server lacks, each with what makes it privileged there."""
    with connect(server_dsn, autocommit=True) as conn:
        return plan_roles(conn, definitions)


def live_roles(source_dsn: str) -> list[RoleDefinition]:
    """The roles the live database's objects need now, as its server defines them: what a point-in-time
    copy is expected to need, known before anyone is asked."""
    with connect(source_dsn, autocommit=True) as conn:
        needed = set(roles_in_database(conn))
        return [d for d in parse_definitions(role_definitions(conn, needed), "the live server") if d.name in needed]


def refuse_privileged(planned: Sequence[PlannedRole], allowed: bool, what: str, server: str, otherwise: str) -> None:
    flagged = [p for p in planned if p.flags]
    if not flagged or allowed:
        return
    roles = "; ".join(f"role {show_name(p.definition.name)} would have {', '.join(p.flags)}" for p in flagged)
    raise NotAllowedError(f"{what} would create role(s) on {server} with privileges the bot does not grant without "
                          f"{ALLOW_FLAG}: {roles}. Nobody was asked and nothing was created. Ask again with {ALLOW_FLAG} "
                          f"to have approvers grant them (the plan flags them), or {otherwise}")


def role_lines(planned: Sequence[PlannedRole], allowed: bool, source: str) -> list[str]:
    """The plan's lines about roles: each role with its attributes and memberships, privileges flagged."""
    lines = []
    if planned:
        names = ", ".join(show_name(p.definition.name) for p in planned)
        lines.append(f"Creates role(s) first: {names} (from {source}; they stay even if the restore fails)")
        for p in planned:
            flag = f" · :warning: PRIVILEGED: {', '.join(p.flags)}" if p.flags else ""
            lines.append(f"  • {show_name(p.definition.name)}: {p.definition.describe()}{flag}")
    if allowed:
        flagged = any(p.flags for p in planned)
        lines.append(f":warning: {ALLOW_FLAG}: the privileged roles above are created as flagged" if flagged
                     else f"{ALLOW_FLAG}: no role here needs it")
    return lines


def plan_copy_roles(source_dsn: str, server_dsn: str, request) -> tuple[dict, ...]:
    """A point-in-time `--into` copy's roles for its plan (PlannedRole dicts), refused when privileged
    without the opt-in; `request` is the PointInTimeRequest."""
    planned = plan_missing_roles(server_dsn, live_roles(source_dsn))
    refuse_privileged(planned, request.allow_privileged_roles, f"copying {request.database} into {request.into}",
                      f"target {request.to}" if request.to else f"{request.database}'s server",
                      "create those roles on the server yourself first")
    return tuple(p.to_dict() for p in planned)


def create_copy_roles(services: Services, plan, record: BackupRecord, server_dsn: str, actor: Actor, request_id: int,
                      step: Callable[[str, float, str], None]) -> None:
    """Before a point-in-time copy is restored: the roles it needs that the server lacks, as the plan
    (a PointInTimePlan) approved them."""
    started = time.monotonic()
    needed = set(record.roles)
    definitions = [d for d in parse_definitions(record.role_definitions, f"backup #{record.id}") if d.name in needed]
    missing = copy_roles(planned_roles(plan.roles), definitions, server_dsn)
    if missing:
        created = create_roles(server_dsn, missing, allow_privileged=plan.allow_privileged_roles)
        step("roles", time.monotonic() - started, created.summary())
        record_privileged(services, plan.database, actor, request_id, created)


def copy_roles(planned: Sequence[PlannedRole], needed: Sequence[RoleDefinition], server_dsn: str) -> list[RoleDefinition]:
    """The approved definitions of the roles a point-in-time copy needs; refused when the copy needs a
    role the plan did not list exactly as it is (approvers agreed to those roles, not to others)."""
    approved = {p.definition.name: p.definition for p in planned}
    missing = set(missing_roles(server_dsn, [d.name for d in needed]))
    unlisted = [d.name for d in needed if d.name in missing and approved.get(d.name) != d]
    if unlisted:
        raise BackupbotError(f"the database at that moment needs role(s) {', '.join(show_name(n) for n in unlisted)} "
                             "that the approved plan does not list as they are there; nothing was created: create them "
                             "on the server first, then ask again")
    return [approved[d.name] for d in needed if d.name in missing]


def record_privileged(services: Services, database: str, actor: Actor, request_id: int, created: RolesCreated) -> None:
    if not created.privileged:
        return
    roles = "; ".join(f"{show_name(name)} ({', '.join(flags)})" for name, flags in sorted(created.privileged.items()))
    record_event(services, "restore.privileged_roles", database=database, actor=actor,
                 text=f"Restore request #{request_id} created privileged role(s) {roles}, as requested with {ALLOW_FLAG}",
                 detail={"request_id": request_id, "allow_privileged_roles": True,
                         "roles": {name: list(flags) for name, flags in created.privileged.items()}})
