"""Roles and globals: what a restore onto a new server needs before the dump itself can load.

Two records are taken at backup time:

- `dump_globals`: `pg_dumpall --globals-only`, the human path (read it, run it with psql).
- `roles_in_database` + `role_definitions`: the roles the database's objects are owned by or granted
  to, read from the catalog, and their attributes and memberships as JSON for the manifest. A restore
  compares them with the target (`missing_roles`) and creates the missing ones (`create_roles`) with
  every name passed as a psycopg.sql.Identifier, so no role name is ever parsed out of SQL text.

`create_roles_from_globals` runs the globals file's CREATE ROLE / ALTER ROLE / GRANT statements for
chosen roles, for when only the globals file is at hand.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from commands.errors import DatabaseUnavailableError, DumpError
from commands.pg.names import read_quoted
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

_FLAGS = [  # (pg_roles column, keyword when true, keyword when false)
    ("rolsuper", "SUPERUSER", "NOSUPERUSER"),
    ("rolinherit", "INHERIT", "NOINHERIT"),
    ("rolcreaterole", "CREATEROLE", "NOCREATEROLE"),
    ("rolcreatedb", "CREATEDB", "NOCREATEDB"),
    ("rolcanlogin", "LOGIN", "NOLOGIN"),
    ("rolreplication", "REPLICATION", "NOREPLICATION"),
    ("rolbypassrls", "BYPASSRLS", "NOBYPASSRLS"),
]


def _connect(dsn: str, **kwargs) -> psycopg.Connection:
    try:
        return psycopg.connect(dsn, connect_timeout=10, application_name="backupbot", **kwargs)
    except psycopg.Error as exc:
        raise DatabaseUnavailableError(f"cannot connect: {redact(str(exc).strip(), [dsn])}") from None


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
        definition.update({column: bool(value) for (column, _, _), value in zip(_FLAGS, flags, strict=True)})
        definition["rolconnlimit"] = int(connlimit)
        definition["rolvaliduntil"] = valid_until
        definition["member_of"] = [{"role": m["role"], "admin": bool(m["admin"])} for m in member_of]
        definitions.append(definition)
    return definitions


# ---------------------------------------------------------------- at restore time


def existing_roles(conn: psycopg.Connection, roles: Iterable[str]) -> set[str]:
    return {row[0] for row in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(roles)])}


def missing_roles(target_dsn: str, roles: Iterable[str]) -> list[str]:
    """The roles of `roles` that the target server does not have, sorted."""
    roles = sorted(set(roles))
    with _connect(target_dsn, autocommit=True) as conn:
        return sorted(set(roles) - existing_roles(conn, roles))


@dataclass
class RolesCreated:
    created: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)
    memberships: list[tuple[str, str]] = field(default_factory=list)  # (member, role) granted
    skipped: list[str] = field(default_factory=list)  # statements not run, and why

    def summary(self) -> str:
        parts = []
        if self.created:
            parts.append(f"created role(s) {', '.join(self.created)}")
        if self.memberships:
            parts.append(f"granted {len(self.memberships)} membership(s)")
        if self.already_there:
            parts.append(f"left existing role(s) {', '.join(self.already_there)} unchanged")
        return "; ".join(parts) or "no roles to create"


def _role_options(definition: dict) -> sql.Composable:
    options = [sql.SQL(on if definition.get(column) else off) for column, on, off in _FLAGS]
    connlimit = int(definition.get("rolconnlimit", -1))
    options.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(connlimit)))
    if definition.get("rolvaliduntil"):
        options.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(str(definition["rolvaliduntil"]))))
    return sql.SQL(" ").join(options)


def create_roles(target_dsn: str, definitions: list[dict]) -> RolesCreated:
    """Create the roles of `definitions` (from `role_definitions`) that the target lacks, then grant
    their memberships; one transaction, so a failure leaves the target's roles as they were.

    Roles that already exist are left unchanged. Created LOGIN roles have no password: set one, or
    run the globals file, before the application connects.
    """
    result = RolesCreated()
    names = [d["name"] for d in definitions]
    with _connect(target_dsn) as conn:
        with conn.transaction():
            present = existing_roles(conn, names)
            for definition in definitions:
                name = definition["name"]
                if name in present:
                    result.already_there.append(name)
                    continue
                conn.execute(sql.SQL("CREATE ROLE {} WITH {}").format(sql.Identifier(name), _role_options(definition)))
                result.created.append(name)
            all_present = existing_roles(conn, names + [m["role"] for d in definitions for m in d.get("member_of", [])])
            for definition in definitions:
                if definition["name"] not in result.created:
                    continue
                for membership in definition.get("member_of", []):
                    role = membership["role"]
                    if role not in all_present:
                        result.skipped.append(f"GRANT {role} TO {definition['name']}: role {role} does not exist")
                        continue
                    query = sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(definition["name"]))
                    if membership.get("admin"):
                        query += sql.SQL(" WITH ADMIN OPTION")
                    conn.execute(query)
                    result.memberships.append((definition["name"], role))
    return result


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
    """Tokens of a statement: unquoted words (upper-cased) and quoted identifiers (unquoted, exact)."""
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
            tokens.append(("literal", statement[i:end + 1]))
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


def create_roles_from_globals(target_dsn: str, globals_sql: str | bytes, only: Iterable[str]) -> RolesCreated:
    """Run the globals file's statements for the roles in `only` that the target lacks.

    CREATE ROLE and ALTER ROLE statements of those roles, and GRANT role TO member where the member is
    one of them and every role named exists by then. Everything else in the file (tablespaces,
    settings of other roles) is left for a person to read. One transaction.
    """
    if isinstance(globals_sql, bytes):
        globals_sql = globals_sql.decode("utf-8")
    wanted = set(only)
    result = RolesCreated()
    statements = split_statements(globals_sql)
    with _connect(target_dsn) as conn:
        with conn.transaction():
            present = existing_roles(conn, wanted)
            result.already_there = sorted(present)
            todo = wanted - present
            grants = []
            for statement in statements:
                tokens = _words(statement)
                if len(tokens) < 3:
                    continue
                if _keyword(tokens[0], "CREATE") and _keyword(tokens[1], "ROLE") and _name(tokens[2]) in todo:
                    conn.execute(statement)
                    result.created.append(_name(tokens[2]))
                elif _keyword(tokens[0], "ALTER") and _keyword(tokens[1], "ROLE") and _name(tokens[2]) in todo:
                    conn.execute(statement)
                elif _keyword(tokens[0], "GRANT"):
                    grants.append((statement, tokens))
            for statement, tokens in grants:
                to = next((i for i, t in enumerate(tokens) if _keyword(t, "TO")), None)
                if to is None or to + 1 >= len(tokens) or _name(tokens[to + 1]) not in todo:
                    continue
                named = [_name(t) for t in tokens[1:] if t[0] == "ident" or (t[0] == "word" and t[1].upper() not in (
                    "TO", "WITH", "ADMIN", "INHERIT", "SET", "OPTION", "GRANTED", "BY", "TRUE", "FALSE"))]
                missing = set(named) - existing_roles(conn, named)
                if missing:
                    result.skipped.append(f"membership of {_name(tokens[to + 1])}: {', '.join(sorted(missing))} missing")
                    continue
                conn.execute(statement)
                result.memberships.append((_name(tokens[to + 1]), _name(tokens[1])))
    return result
