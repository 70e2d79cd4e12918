"""Roles and globals: what a restore onto a new server needs before the dump itself can load.

Two records are taken at backup time:

- `dump_globals`: `pg_dumpall --globals-only`, the human path (read it, run it with psql).
- `roles_in_database` + `role_definitions`: the roles the database's objects are owned by or granted
  to, read from the catalog, and their attributes and memberships as JSON for the manifest. A restore
  compares them with the target (`missing_roles`) and creates the missing ones (commands.pg.roles).

`create_roles_from_globals`, for when only the globals file is at hand, parses the file's CREATE
ROLE / ALTER ROLE / GRANT statements into the same typed definitions and creates them the same way:
the file's text is never run, since whoever can write to the backup store can write that text.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import psycopg

from commands.errors import DumpError, IntegrityError
from commands.pg.names import read_quoted
from commands.pg.roles import (
    ATTRIBUTES,
    Membership,
    RoleDefinition,
    RolesCreated,
    check_name,
    connect,
    create_roles,
    existing_roles,
    show_name,
)
from commands.pg.tools import StderrTail, die_with_parent, last_lines, pg_bin, pg_env
from commands.redact import redact

# Every catalog column that names the owner of something pg_dump dumps, restricted to user schemas.
_USER_NS = "nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND nspname NOT LIKE 'pg\\_temp\\_%' " \
           "AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'"

_NOT_EXTENSION_MEMBER = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass AND d.objid = x.oid "
    "AND d.deptype = 'e')"
)


def _in_user_schema(catalog: str, owner_col: str, ns_col: str, acl_col: str | None) -> str:
    acl = f"x.{acl_col}" if acl_col else "NULL::aclitem[]"
    return (f"SELECT x.{owner_col} AS owner, {acl} AS acl FROM {catalog} x "
            f"JOIN pg_namespace n ON n.oid = x.{ns_col} WHERE {_USER_NS} "
            f"AND {_NOT_EXTENSION_MEMBER.format(catalog=catalog)}")


_SOURCES = [
    f"SELECT n.nspowner AS owner, n.nspacl AS acl FROM pg_namespace n WHERE {_USER_NS} "
    "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid "
    "AND d.deptype = 'e')",
    _in_user_schema("pg_class", "relowner", "relnamespace", "relacl"),
    _in_user_schema("pg_proc", "proowner", "pronamespace", "proacl"),
    _in_user_schema("pg_type", "typowner", "typnamespace", "typacl"),
    _in_user_schema("pg_collation", "collowner", "collnamespace", None),
    _in_user_schema("pg_conversion", "conowner", "connamespace", None),
    _in_user_schema("pg_operator", "oprowner", "oprnamespace", None),
    _in_user_schema("pg_opclass", "opcowner", "opcnamespace", None),
    _in_user_schema("pg_opfamily", "opfowner", "opfnamespace", None),
    _in_user_schema("pg_ts_dict", "dictowner", "dictnamespace", None),
    _in_user_schema("pg_ts_config", "cfgowner", "cfgnamespace", None),
    _in_user_schema("pg_statistic_ext", "stxowner", "stxnamespace", None),
    # column privileges
    "SELECT NULL::oid AS owner, a.attacl AS acl FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
    f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.attacl IS NOT NULL AND {_USER_NS}",
    "SELECT x.fdwowner AS owner, x.fdwacl AS acl FROM pg_foreign_data_wrapper x",
    "SELECT x.srvowner AS owner, x.srvacl AS acl FROM pg_foreign_server x",
    "SELECT x.umuser AS owner, NULL::aclitem[] AS acl FROM pg_user_mappings x WHERE x.umuser <> 0",  # the view: readable by all
    "SELECT x.evtowner AS owner, NULL::aclitem[] AS acl FROM pg_event_trigger x",
    "SELECT x.pubowner AS owner, NULL::aclitem[] AS acl FROM pg_publication x",
    "SELECT x.lomowner AS owner, x.lomacl AS acl FROM pg_largeobject_metadata x",
    "SELECT x.defaclrole AS owner, x.defaclacl AS acl FROM pg_default_acl x",
]

ROLES_IN_DATABASE_SQL = f"""
WITH objects AS ({' UNION ALL '.join(f'({q})' for q in _SOURCES)}),
role_oids AS (
    SELECT owner AS oid FROM objects WHERE owner IS NOT NULL
    UNION SELECT (aclexplode(acl)).grantee FROM objects WHERE acl IS NOT NULL
    UNION SELECT (aclexplode(acl)).grantor FROM objects WHERE acl IS NOT NULL
)
SELECT r.rolname FROM role_oids o JOIN pg_roles r ON r.oid = o.oid
WHERE r.rolname NOT LIKE 'pg\\_%'
ORDER BY r.rolname
"""

ROLE_DEFINITIONS_SQL = """
SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication,
       r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil::text,
       COALESCE((SELECT json_agg(json_build_object('role', g.rolname, 'admin', m.admin_option) ORDER BY g.rolname)
                 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid), '[]'::json)
FROM pg_roles r WHERE r.rolname = ANY(%s) ORDER BY r.rolname
"""

PARENTS_SQL = """
SELECT DISTINCT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = ANY(%s) AND g.rolname NOT LIKE 'pg\\_%%'
"""

# ---------------------------------------------------------------- pg_dumpall


def dumpall_argv(dbname: str, include_passwords: bool) -> list[str]:
    """pg_dumpall's argv: options only. The database name is not secret; credentials go by environment."""
    argv = [pg_bin("pg_dumpall"), "--globals-only", "--no-password", f"--database={dbname}"]
    if not include_passwords:
        argv.append("--no-role-passwords")
    return argv


def dump_globals(dsn: str, include_passwords: bool, timeout: float = 300) -> bytes:
    """`pg_dumpall --globals-only` of the server behind `dsn` (roles, memberships, tablespaces), as SQL.

    Passwords (their hashes) only with `include_passwords` (for encrypted artifacts): that also needs
    a superuser, to read pg_authid. Raises DumpError with pg_dumpall's redacted stderr.
    """
    env = pg_env(dsn)
    dbname = env.get("PGDATABASE") or env.get("PGUSER") or "postgres"
    proc = subprocess.Popen(dumpall_argv(dbname, include_passwords), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, close_fds=True, preexec_fn=die_with_parent)
    stderr = StderrTail(proc.stderr)
    try:
        out = proc.stdout.read()
        proc.stdout.close()
        returncode = proc.wait(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if returncode != 0 or b"CREATE ROLE" not in out:
        detail = last_lines(redact(stderr.text(), [dsn, env.get("PGPASSWORD", "")]))
        problem = f"pg_dumpall exited with status {returncode}" if returncode else "pg_dumpall printed no roles"
        raise DumpError(problem + (f"\n{detail}" if detail else ""))
    return out


# ---------------------------------------------------------------- recorded at backup time


def roles_in_database(conn: psycopg.Connection) -> list[str]:
    """Roles the connected database's dump refers to: owners of its objects, grantees and grantors of
    their privileges (and of default privileges). Built-in pg_* roles and PUBLIC are left out."""
    return [row[0] for row in conn.execute(ROLES_IN_DATABASE_SQL).fetchall()]


def role_definitions(conn: psycopg.Connection, roles: Iterable[str], include_parents: bool = True) -> list[dict]:
    """Attributes and memberships of `roles` as JSON-ready dicts, for the manifest.

    With `include_parents`, the roles they are members of (transitively, pg_* excepted) are added, so
    memberships can be recreated. Passwords are never read.
    """
    wanted = sorted(set(roles))
    if include_parents:
        frontier = wanted
        while frontier:
            parents = [row[0] for row in conn.execute(PARENTS_SQL, [frontier]).fetchall()]
            frontier = sorted(set(parents) - set(wanted))
            wanted = sorted(set(wanted) | set(frontier))
    definitions = []
    for row in conn.execute(ROLE_DEFINITIONS_SQL, [wanted]).fetchall():
        name, *flags, connlimit, valid_until, member_of = row
        definition = {"name": name}
        definition.update({column: bool(value) for (_, column, _, _), value in zip(ATTRIBUTES, flags, strict=True)})
        definition["rolconnlimit"] = int(connlimit)
        definition["rolvaliduntil"] = valid_until
        definition["member_of"] = [{"role": m["role"], "admin": bool(m["admin"])} for m in member_of]
        definitions.append(definition)
    return definitions


# ---------------------------------------------------------------- at restore time


def missing_roles(target_dsn: str, roles: Iterable[str]) -> list[str]:
    """The roles of `roles` that the target server does not have, sorted."""
    roles = sorted(set(roles))
    with connect(target_dsn, autocommit=True) as conn:
        return sorted(set(roles) - existing_roles(conn, roles))


# ---------------------------------------------------------------- the globals file


def split_statements(text: str) -> list[str]:
    """Split SQL into statements at `;` outside quotes; drop `--` comments. Enough for pg_dumpall output."""
    statements, current, i, n = [], [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch in ("'", '"'):
            end = i + 1
            while end < n:
                if text[end] == ch:
                    if end + 1 < n and text[end + 1] == ch:
                        end += 2
                        continue
                    break
                end += 1
            current.append(text[i:end + 1])
            i = end + 1
        elif ch == "\\" and (i == 0 or text[i - 1] == "\n"):  # a psql meta-command (\\restrict KEY): not SQL
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            current.append("\n")
        elif ch == ";":
            statement = "".join(current).strip()
            if statement:
                statements.append(statement)
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    tail = "".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


def _words(statement: str) -> list[str]:
    """Tokens of a statement: unquoted words, quoted identifiers (unquoted, exact) and string literals (unquoted)."""
    tokens, i, n = [], 0, len(statement)
    while i < n:
        ch = statement[i]
        if ch.isspace() or ch == ",":
            i += 1
        elif ch == '"':
            name, i = read_quoted(statement, i) or (statement[i + 1:], n)
            tokens.append(("ident", name))
        elif ch == "'":
            end = i + 1
            while end < n:
                if statement[end] == "'":
                    if statement[end + 1:end + 2] == "'":
                        end += 2
                        continue
                    break
                end += 1
            tokens.append(("literal", statement[i + 1:end].replace("''", "'")))
            i = end + 1
        else:
            end = i
            while end < n and not statement[end].isspace() and statement[end] not in ',"\'':
                end += 1
            tokens.append(("word", statement[i:end]))  # keywords compare upper-cased, names fold to lower
            i = end
    return tokens


def _name(token: tuple[str, str]) -> str:
    kind, value = token
    return value if kind == "ident" else value.lower()


def _keyword(token: tuple[str, str], word: str) -> bool:
    return token[0] == "word" and token[1].upper() == word




_WORD_OPTIONS = {keyword: (attr, value) for attr, _, on, off in ATTRIBUTES for keyword, value in ((on, True), (off, False))}


@dataclass
class GlobalsRoles:
    """What the globals file says about roles, parsed; passwords (hashes) kept apart from definitions."""

    definitions: dict[str, RoleDefinition] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # statements about roles that are not applied, and why


def _options(definition: RoleDefinition, tokens: list[tuple[str, str]], where: str,
             passwords: dict[str, str]) -> RoleDefinition:
    """CREATE/ALTER ROLE options into the definition's fields; anything else is refused, never run."""
    changes: dict = {}
    member_of = list(definition.member_of)
    i = 1 if tokens and _keyword(tokens[0], "WITH") else 0
    while i < len(tokens):
        token = tokens[i]
        word = token[1].upper() if token[0] == "word" else None
        following = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if word in _WORD_OPTIONS:
            attr, value = _WORD_OPTIONS[word]
            changes[attr] = value
            i += 1
        elif word == "CONNECTION" and _keyword(following, "LIMIT") and i + 2 < len(tokens) \
                and tokens[i + 2][0] == "word" and tokens[i + 2][1].lstrip("-").isdigit():
            changes["connlimit"] = int(tokens[i + 2][1])
            i += 3
        elif word == "ENCRYPTED" and _keyword(following, "PASSWORD"):
            i += 1
        elif word == "PASSWORD" and (following[0] == "literal" or _keyword(following, "NULL")):
            if following[0] == "literal":
                passwords[definition.name] = following[1]
            i += 2
        elif word == "VALID" and _keyword(following, "UNTIL") and i + 2 < len(tokens) and tokens[i + 2][0] == "literal":
            changes["valid_until"] = tokens[i + 2][1]
            i += 3
        elif word == "IN" and _keyword(following, "ROLE"):
            i += 2
            while i < len(tokens) and (tokens[i][0] == "ident" or tokens[i][1].upper() not in _STOP_WORDS):
                member_of.append(Membership(check_name(_name(tokens[i]), where)))
                i += 1
        else:
            raise IntegrityError(f"{where}: the bot does not read {show_name(token[1])[:40]!r} in a role's options; "
                                 "create this role by hand after reading the globals file")
    values = {**definition.to_dict(), "member_of": [{"role": m.role, "admin": m.admin} for m in member_of]}
    for attr, column, _, _ in ATTRIBUTES:
        if attr in changes:
            values[column] = changes[attr]
    values["rolconnlimit"] = changes.get("connlimit", definition.connlimit)
    values["rolvaliduntil"] = changes.get("valid_until", definition.valid_until)
    return RoleDefinition.from_dict(values, where)


_STOP_WORDS = {keyword for keyword in _WORD_OPTIONS} | {"CONNECTION", "ENCRYPTED", "PASSWORD", "VALID", "IN", "ROLE",
                                                        "ADMIN", "USER", "SYSID", "WITH"}


def parse_globals(globals_sql: str | bytes) -> GlobalsRoles:
    """The roles, attributes, passwords and memberships of a `pg_dumpall --globals-only` file.

    Raises IntegrityError on a role statement it cannot read exactly; settings (ALTER ROLE ... SET),
    comments and tablespaces are not read, and role settings are listed in `skipped`.
    """
    if isinstance(globals_sql, bytes):
        globals_sql = globals_sql.decode("utf-8")
    parsed = GlobalsRoles()
    grants = []
    for statement in split_statements(globals_sql):
        tokens = _words(statement)
        if len(tokens) < 3:
            continue
        if _keyword(tokens[0], "GRANT"):
            grants.append(tokens)
            continue
        if not ((_keyword(tokens[0], "CREATE") or _keyword(tokens[0], "ALTER")) and _keyword(tokens[1], "ROLE")):
            continue
        name = check_name(_name(tokens[2]), "the globals file")
        where = f"the globals file, role {show_name(name)}"
        rest = tokens[3:]
        if _keyword(tokens[0], "CREATE"):
            parsed.definitions[name] = _options(RoleDefinition(name=name), rest, where, parsed.passwords)
        elif rest and rest[0][0] == "word" and rest[0][1].upper() in ("SET", "RESET", "IN", "RENAME"):
            parsed.skipped.append(f"{' '.join(t[1].upper() for t in tokens[:2])} {show_name(name)} "
                                  f"{rest[0][1].upper()} ...: not applied, read it in the globals file")
        elif name in parsed.definitions:
            parsed.definitions[name] = _options(parsed.definitions[name], rest, where, parsed.passwords)
    for tokens in grants:
        _membership(parsed, tokens)
    return parsed


def _membership(parsed: GlobalsRoles, tokens: list[tuple[str, str]]) -> None:
    """GRANT role[, ...] TO member[, ...] [WITH ADMIN OPTION | WITH ADMIN TRUE, ...] [GRANTED BY x]."""
    to = next((i for i, t in enumerate(tokens) if _keyword(t, "TO")), None)
    if to is None or any(_keyword(t, "ON") for t in tokens[:to]):
        return  # not a role membership (a privilege on an object)
    roles = [check_name(_name(t), "the globals file's GRANT") for t in tokens[1:to]]
    end = next((i for i in range(to + 1, len(tokens)) if _keyword(tokens[i], "WITH") or _keyword(tokens[i], "GRANTED")),
               len(tokens))
    members = [check_name(_name(t), "the globals file's GRANT") for t in tokens[to + 1:end]]
    options = [t[1].upper() for t in tokens[end:] if t[0] == "word"]
    admin = "ADMIN" in options and (options[options.index("ADMIN") + 1:][:1] in (["OPTION"], ["TRUE"]))
    for member in members:
        if member in parsed.definitions:
            definition = parsed.definitions[member]
            added = tuple(Membership(role, admin) for role in roles)
            parsed.definitions[member] = replace(definition, member_of=definition.member_of + added)


def create_roles_from_globals(target_dsn: str, globals_sql: str | bytes, only: Iterable[str],
                              allow_privileged: bool = False) -> RolesCreated:
    """Create the roles in `only` that the target lacks, as the globals file defines them (with their
    password hashes and memberships), through `create_roles`; privileged ones only with `allow_privileged`.
    """
    parsed = parse_globals(globals_sql)
    wanted = sorted(set(only))
    undefined = [name for name in wanted if name not in parsed.definitions]
    result = create_roles(target_dsn, [parsed.definitions[name] for name in wanted if name in parsed.definitions],
                          allow_privileged=allow_privileged,
                          passwords={name: parsed.passwords[name] for name in wanted if name in parsed.passwords})
    result.skipped += [f"{show_name(name)}: the globals file has no CREATE ROLE for it" for name in undefined]
    result.skipped += [note for note in parsed.skipped if any(show_name(name) in note for name in wanted)]
    return result
