"""Role definitions as typed values, which of them are privileged, and the one way they are created.

Whatever a backup (its manifest, the catalog, or its globals file) says about a role is data that
someone able to write to the backup store could have forged. So a definition is parsed into a
`RoleDefinition` (every field checked), and `create_roles` builds every statement from those fields
with `sql.Identifier` and `sql.Literal`: no SQL text from a backup is ever run.

Privileged, and never created unless the caller allows it (`allow_privileged`): the attributes that
reach beyond the database (SUPERUSER, CREATEROLE, REPLICATION, BYPASSRLS), and membership in the
predefined roles that reach the server's files and programs or every table's data
(`PRIVILEGED_PREDEFINED`), directly or through another role that is privileged. Other predefined
roles (pg_monitor, pg_read_all_settings, pg_read_all_stats, pg_signal_backend, ...) see or signal,
but neither reach files or programs nor read or write data, so they are listed, not flagged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from commands.errors import DatabaseUnavailableError, IntegrityError, NotAllowedError
from commands.redact import redact

MAX_NAME_BYTES = 63  # NAMEDATALEN - 1: a longer name would be truncated into another name

# (field, pg_roles column, keyword when true, keyword when false); the manifest's keys are the columns
ATTRIBUTES = (
    ("superuser", "rolsuper", "SUPERUSER", "NOSUPERUSER"),
    ("inherit", "rolinherit", "INHERIT", "NOINHERIT"),
    ("createrole", "rolcreaterole", "CREATEROLE", "NOCREATEROLE"),
    ("createdb", "rolcreatedb", "CREATEDB", "NOCREATEDB"),
    ("login", "rolcanlogin", "LOGIN", "NOLOGIN"),
    ("replication", "rolreplication", "REPLICATION", "NOREPLICATION"),
    ("bypassrls", "rolbypassrls", "BYPASSRLS", "NOBYPASSRLS"),
)
DEFAULTS = {"superuser": False, "inherit": True, "createrole": False, "createdb": False, "login": False,
            "replication": False, "bypassrls": False}
PRIVILEGED_ATTRIBUTES = (("superuser", "SUPERUSER"), ("createrole", "CREATEROLE"), ("replication", "REPLICATION"),
                         ("bypassrls", "BYPASSRLS"))
PRIVILEGED_PREDEFINED = frozenset({"pg_execute_server_program", "pg_read_server_files", "pg_write_server_files",
                                   "pg_read_all_data", "pg_write_all_data"})


def show_name(name: str) -> str:
    """A role name for a message: control and other invisible characters escaped, so a name cannot
    write lines of its own into a plan."""
    return "".join(ch if ch.isprintable() and ch != "\\" else ch.encode("unicode_escape").decode("ascii")
                   for ch in name)


def check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise IntegrityError(f"{what}: a role name must be a non-empty string, not {value!r:.60}")
    if "\x00" in value or len(value.encode()) > MAX_NAME_BYTES:
        raise IntegrityError(f"{what}: role name {show_name(value)[:80]!r} is not a PostgreSQL name "
                             f"(at most {MAX_NAME_BYTES} bytes, no NUL)")
    return value


@dataclass(frozen=True)
class Membership:
    role: str
    admin: bool = False


@dataclass(frozen=True)
class RoleDefinition:
    name: str
    superuser: bool = False
    inherit: bool = True
    createrole: bool = False
    createdb: bool = False
    login: bool = False
    replication: bool = False
    bypassrls: bool = False
    connlimit: int = -1
    valid_until: str | None = None
    member_of: tuple[Membership, ...] = ()

    def to_dict(self) -> dict:
        """The manifest's form (pg_roles column names), as `role_definitions` has always stored it."""
        values: dict = {"name": self.name}
        values.update({column: getattr(self, name) for name, column, _, _ in ATTRIBUTES})
        values["rolconnlimit"] = self.connlimit
        values["rolvaliduntil"] = self.valid_until
        values["member_of"] = [{"role": m.role, "admin": m.admin} for m in self.member_of]
        return values

    @classmethod
    def from_dict(cls, values: object, source: str = "role definition") -> RoleDefinition:
        """Every field checked: a definition from a backup is only data, and may have been forged."""
        if not isinstance(values, Mapping):
            raise IntegrityError(f"{source}: a role definition must be an object, not {type(values).__name__}")
        name = check_name(values.get("name"), source)
        if name.startswith("pg_"):
            raise IntegrityError(f"{source}: role {show_name(name)} is a reserved (pg_) name and cannot be created")
        where = f"{source}, role {show_name(name)}"
        flags = {}
        for attr, column, _, _ in ATTRIBUTES:
            value = values.get(column, DEFAULTS[attr])
            if not isinstance(value, bool):
                raise IntegrityError(f"{where}: {column} must be true or false, not {value!r:.40}")
            flags[attr] = value
        connlimit = values.get("rolconnlimit", -1)
        if isinstance(connlimit, bool) or not isinstance(connlimit, int) or not -1 <= connlimit < 2 ** 31:
            raise IntegrityError(f"{where}: rolconnlimit must be a whole number from -1, not {connlimit!r:.40}")
        valid_until = values.get("rolvaliduntil")
        if valid_until is not None and not _is_time(valid_until):
            raise IntegrityError(f"{where}: rolvaliduntil must be a time or infinity, not {valid_until!r:.40}")
        member_of = values.get("member_of", [])
        if not isinstance(member_of, list):
            raise IntegrityError(f"{where}: member_of must be a list")
        memberships = []
        for item in member_of:
            if not isinstance(item, Mapping) or not isinstance(item.get("admin", False), bool):
                raise IntegrityError(f"{where}: each membership must be {{\"role\": name, \"admin\": true/false}}")
            memberships.append(Membership(check_name(item.get("role"), where), item.get("admin", False)))
        return cls(name=name, connlimit=connlimit, valid_until=valid_until, member_of=tuple(memberships), **flags)

    def describe(self) -> str:
        """Its attributes and memberships as approvers read them."""
        words = ["LOGIN" if self.login else "NOLOGIN"]
        words += [on for attr, _, on, _ in ATTRIBUTES if attr not in ("login", "inherit") and getattr(self, attr)]
        if not self.inherit:
            words.append("NOINHERIT")
        if self.connlimit != -1:
            words.append(f"CONNECTION LIMIT {self.connlimit}")
        if self.valid_until:
            words.append(f"VALID UNTIL {show_name(self.valid_until)}")
        members = [f"{show_name(m.role)}" + (" WITH ADMIN OPTION" if m.admin else "") for m in self.member_of]
        return " ".join(words) + "; " + (f"member of {', '.join(members)}" if members else "no memberships")


def _is_time(value: object) -> bool:
    """Only its shape: the server reads it (in its own DateStyle) as a literal, so nothing here is SQL."""
    return isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable()


def parse_definitions(values: Iterable[object], source: str) -> list[RoleDefinition]:
    return [RoleDefinition.from_dict(value, source) for value in values]


# ---------------------------------------------------------------- what is privileged


SERVER_PRIVILEGES_SQL = """
WITH RECURSIVE up(start, oid, depth) AS (
    SELECT r.rolname, r.oid, 0 FROM pg_roles r WHERE r.rolname = ANY(%s)
    UNION SELECT up.start, m.roleid, up.depth + 1 FROM up JOIN pg_auth_members m ON m.member = up.oid WHERE up.depth < 50
)
SELECT DISTINCT up.start, g.rolname, up.depth = 0, g.rolsuper, g.rolcreaterole, g.rolreplication, g.rolbypassrls
FROM up JOIN pg_roles g ON g.oid = up.oid ORDER BY 1, 2
"""


def server_privileges(conn: psycopg.Connection, names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """For roles that exist on the connected server: what makes each privileged, itself or through the
    roles it is a member of (membership lets it SET ROLE to them)."""
    reasons: dict[str, list[str]] = {}
    for start, reached, itself, *attrs in conn.execute(SERVER_PRIVILEGES_SQL, [sorted(set(names))]).fetchall():
        found = reasons.setdefault(start, [])
        keywords = [keyword for (_, keyword), on in zip(PRIVILEGED_ATTRIBUTES, attrs, strict=True) if on]
        if itself:
            found.extend(keywords)
        else:
            if reached in PRIVILEGED_PREDEFINED:
                found.append(f"member of {reached}")
            found.extend(f"member of {show_name(reached)} ({keyword})" for keyword in keywords)
    return {name: tuple(found) for name, found in reasons.items() if found}


def privileges(definitions: Sequence[RoleDefinition],
               on_server: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """What makes each role about to be created privileged: its own attributes, its memberships in the
    privileged predefined roles, and in roles (on the server, or created with it) that are privileged."""
    own = {d.name: [keyword for attr, keyword in PRIVILEGED_ATTRIBUTES if getattr(d, attr)]
           + [f"member of {m.role}" for m in d.member_of if m.role in PRIVILEGED_PREDEFINED] for d in definitions}
    reasons = {name: list(found) for name, found in own.items()}
    changed = True
    while changed:  # privilege through a role created alongside, to any depth
        changed = False
        for d in definitions:
            for m in d.member_of:
                if m.role in PRIVILEGED_PREDEFINED or m.role == d.name:
                    continue
                through = reasons.get(m.role) or list(on_server.get(m.role, ()))
                text = f"member of {show_name(m.role)} ({', '.join(through)})" if through else None
                if text and not any(r.startswith(f"member of {show_name(m.role)} (") for r in reasons[d.name]):
                    reasons[d.name].append(text)
                    changed = True
    return {name: tuple(found) for name, found in reasons.items() if found}


class PrivilegedRoleError(NotAllowedError):
    """Creating these roles would grant privileges nobody opted into; nothing was created."""

    def __init__(self, flagged: Mapping[str, tuple[str, ...]]):
        self.flagged = dict(flagged)
        super().__init__("creating role(s) would grant privileges that were not allowed: " + refusal_list(self.flagged))


def refusal_list(flagged: Mapping[str, tuple[str, ...]]) -> str:
    return "; ".join(f"role {show_name(name)} would have {', '.join(found)}" for name, found in sorted(flagged.items()))


# ---------------------------------------------------------------- creating


def connect(dsn: str, **kwargs) -> psycopg.Connection:
    try:
        return psycopg.connect(dsn, connect_timeout=10, application_name="backupbot", **kwargs)
    except psycopg.Error as exc:
        raise DatabaseUnavailableError(f"cannot connect: {redact(str(exc).strip(), [dsn])}") from None


def existing_roles(conn: psycopg.Connection, roles: Iterable[str]) -> set[str]:
    return {row[0] for row in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(roles)])}


@dataclass(frozen=True)
class PlannedRole:
    """A role a restore will create, and what makes it privileged (nothing, for most)."""

    definition: RoleDefinition
    flags: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {**self.definition.to_dict(), "flags": list(self.flags)}

    @classmethod
    def from_dict(cls, values: dict) -> PlannedRole:
        return cls(RoleDefinition.from_dict(values, "the plan"), tuple(values.get("flags", ())))


def plan_roles(conn: psycopg.Connection, definitions: Sequence[RoleDefinition]) -> list[PlannedRole]:
    """The definitions the connected server lacks, each with its privileges there."""
    present = existing_roles(conn, [d.name for d in definitions])
    todo = [d for d in definitions if d.name not in present]
    names = {d.name for d in todo}
    on_server = server_privileges(conn, {m.role for d in todo for m in d.member_of if m.role not in names})
    flagged = privileges(todo, on_server)
    return [PlannedRole(d, flagged.get(d.name, ())) for d in todo]


@dataclass
class RolesCreated:
    created: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)
    memberships: list[tuple[str, str]] = field(default_factory=list)  # (member, role) granted
    skipped: list[str] = field(default_factory=list)  # what was not done, and why
    privileged: dict[str, tuple[str, ...]] = field(default_factory=dict)  # created with these, as allowed

    def summary(self) -> str:
        parts = []
        if self.created:
            parts.append(f"created role(s) {', '.join(show_name(n) for n in self.created)}")
        if self.memberships:
            parts.append(f"granted {len(self.memberships)} membership(s)")
        if self.privileged:
            parts.append("privileged, as allowed: " + "; ".join(f"{show_name(n)} {', '.join(f)}"
                                                                for n, f in sorted(self.privileged.items())))
        if self.already_there:
            parts.append(f"left existing role(s) {', '.join(show_name(n) for n in self.already_there)} unchanged")
        if self.skipped:
            parts.append(f"skipped: {'; '.join(self.skipped)}")
        return "; ".join(parts) or "no roles to create"


def _role_options(definition: RoleDefinition, password: str | None) -> sql.Composable:
    options = [sql.SQL(on if getattr(definition, attr) else off) for attr, _, on, off in ATTRIBUTES]
    options.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(definition.connlimit)))
    if password is not None:
        options.append(sql.SQL("PASSWORD {}").format(sql.Literal(password)))
    if definition.valid_until:
        options.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(definition.valid_until)))
    return sql.SQL(" ").join(options)


def create_roles(target_dsn: str, definitions: Sequence[RoleDefinition], allow_privileged: bool = False,
                 passwords: Mapping[str, str] | None = None) -> RolesCreated:
    """Create the roles of `definitions` that the target lacks, then grant their memberships; one
    transaction, so a failure leaves the target's roles as they were.

    Privileges are checked again here, against the target as it is now (it may have changed since a
    plan was approved): without `allow_privileged`, a privileged role raises PrivilegedRoleError and
    nothing is created. Roles that already exist are left unchanged. A LOGIN role gets the password
    (hash) of `passwords` or none: set one before the application connects.
    """
    result = RolesCreated()
    passwords = passwords or {}
    with connect(target_dsn) as conn:
        with conn.transaction():
            planned = plan_roles(conn, definitions)
            flagged = {p.definition.name: p.flags for p in planned if p.flags}
            if flagged and not allow_privileged:
                raise PrivilegedRoleError(flagged)
            result.privileged = flagged
            todo = [p.definition for p in planned]
            result.already_there = [d.name for d in definitions if d not in todo]
            for definition in todo:
                conn.execute(sql.SQL("CREATE ROLE {} WITH {}").format(
                    sql.Identifier(definition.name), _role_options(definition, passwords.get(definition.name))))
                result.created.append(definition.name)
            all_present = existing_roles(conn, [m.role for d in todo for m in d.member_of])
            for definition in todo:
                for membership in definition.member_of:
                    if membership.role not in all_present:
                        result.skipped.append(f"membership of {show_name(definition.name)} in {show_name(membership.role)}: "
                                              "that role does not exist")
                        continue
                    query = sql.SQL("GRANT {} TO {}").format(sql.Identifier(membership.role), sql.Identifier(definition.name))
                    if membership.admin:
                        query += sql.SQL(" WITH ADMIN OPTION")
                    conn.execute(query)
                    result.memberships.append((definition.name, membership.role))
    return result
