"""A side database made exactly like the database it will replace, compared with it, and swapped in.

A whole restore over an existing database goes into a fresh database and is then swapped in by
name (commands.restore.run). That database must be indistinguishable from the one it replaces in
everything pg_restore never restores: its locale provider, ICU locale, collation and ctype, its
tablespace, its ACL exactly (revoked PUBLIC defaults stay revoked), its settings (per role too),
its comment, its connection limit and its flags. `create_like` makes it so, `differences` is what
the bot checks before the swap (a mismatch refuses the swap), and `swap_databases` renames both
in one transaction, so no moment exists where the target's name is free for someone else.
Database names and stored settings are read here too (`validate_database_name`, `split_guc_list`),
for this module and commands.pg.restore.databases, which builds on it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from commands.errors import BackupbotError, UsageError
from commands.pg.names import read_quoted
from commands.pg.tools import with_dbname

DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def validate_database_name(name: str) -> str:
    if not DB_NAME_RE.match(name):
        raise UsageError(f"{name!r} is not a database name (lowercase letters, digits and _, at most 63)")
    return name


# settings whose stored value is a list of possibly double-quoted names (pg_dump's variable_is_guc_list_quote)
GUC_LIST_QUOTE = {"local_preload_libraries", "search_path", "session_preload_libraries", "shared_preload_libraries",
                  "temp_tablespaces", "unix_socket_directories"}


def split_guc_list(value: str) -> list[str]:
    """`reporting, "My Schema"` -> ['reporting', 'My Schema'], as PostgreSQL's SplitGUCList reads it."""
    items, i, n = [], 0, len(value)
    while i < n:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            name, i = read_quoted(value, i) or (value[i + 1:], n)
            items.append(name)
        else:
            j = value.find(",", i)
            j = n if j == -1 else j
            items.append(value[i:j].strip())
            i = j
        while i < n and value[i] != ",":
            i += 1
        i += 1
    return [item for item in items if item != ""] or [""]


# the maintenance databases a swap may connect to (renaming a database needs a session elsewhere)
MAINTENANCE = ("postgres", "template1")


@dataclass(frozen=True)
class DatabaseProperties:
    """Everything of a database that lives outside it, as the catalog has it (names, not OIDs)."""

    owner: str
    encoding: str
    locale_provider: str  # 'c' libc, 'i' icu, 'b' builtin (17+)
    icu_locale: str | None  # daticulocale (15, 16) or datlocale (17+)
    icu_rules: str | None  # 16+
    collate: str
    ctype: str
    tablespace: str
    acl: tuple[str, ...] | None  # datacl as text, in order; None: the defaults
    settings: tuple[tuple[str, tuple[str, ...]], ...]  # (role or '', setconfig), sorted
    comment: str | None
    connection_limit: int
    is_template: bool
    allow_connections: bool

    def compared(self) -> dict:
        """What must be equal before a swap; the flags are set by the swap itself."""
        values = dict(self.__dict__)
        for flag in ("is_template", "allow_connections", "connection_limit"):
            values.pop(flag)
        return values


def _version(conn: psycopg.Connection) -> int:
    return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000


def database_properties(conn: psycopg.Connection, name: str) -> DatabaseProperties:
    version = _version(conn)
    locale = "datlocale" if version >= 17 else "daticulocale"
    rules = "daticurules" if version >= 16 else "NULL::text"
    row = conn.execute(sql.SQL(
        "SELECT d.oid, pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datlocprovider::text, "
        "d.{locale}, {rules}, d.datcollate, d.datctype, t.spcname, d.datacl::text[], "
        "shobj_description(d.oid, 'pg_database'), d.datconnlimit, d.datistemplate, d.datallowconn "
        "FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = %s").format(
            locale=sql.Identifier(locale), rules=sql.SQL(rules)), [name]).fetchone()
    if row is None:
        raise BackupbotError(f"database {name} does not exist")
    settings = tuple(sorted(
        (role or "", tuple(config)) for role, config in conn.execute(
            "SELECT r.rolname, s.setconfig FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE s.setdatabase = %s", [row[0]]).fetchall()))
    return DatabaseProperties(
        owner=row[1], encoding=row[2], locale_provider=row[3], icu_locale=row[4], icu_rules=row[5], collate=row[6],
        ctype=row[7], tablespace=row[8], acl=tuple(row[9]) if row[9] is not None else None, settings=settings,
        comment=row[10], connection_limit=row[11], is_template=row[12], allow_connections=row[13])


def differences(side: DatabaseProperties, target: DatabaseProperties) -> list[str]:
    """What differs between a side database and the database it is about to replace, said plainly."""
    a, b = side.compared(), target.compared()
    return [f"{key.replace('_', ' ')}: {a[key]!r} here, {b[key]!r} on the target" for key in a if a[key] != b[key]]


def create_like(conn: psycopg.Connection, name: str, like: str) -> None:
    """CREATE DATABASE `name` exactly like `like` in everything pg_restore never restores (its flags
    are `like`'s except that it accepts connections and is no template until the swap)."""
    p = database_properties(conn, like)
    version = _version(conn)
    options = [sql.SQL("TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        sql.Literal(p.encoding), sql.Literal(p.collate), sql.Literal(p.ctype))]
    if p.tablespace != "pg_default":  # naming even pg_default needs CREATE on it; template0's is pg_default
        options.append(sql.SQL("TABLESPACE {}").format(sql.Identifier(p.tablespace)))
    provider = {"c": "libc", "i": "icu", "b": "builtin"}[p.locale_provider]
    options.append(sql.SQL("LOCALE_PROVIDER {}").format(sql.SQL(provider)))
    if p.icu_locale is not None:
        key = "BUILTIN_LOCALE" if provider == "builtin" else "ICU_LOCALE"
        options.append(sql.SQL(key + " {}").format(sql.Literal(p.icu_locale)))
    if p.icu_rules is not None and version >= 16:
        options.append(sql.SQL("ICU_RULES {}").format(sql.Literal(p.icu_rules)))
    conn.execute(sql.SQL("CREATE DATABASE {} ").format(sql.Identifier(name)) + sql.SQL(" ").join(options))
    ident = sql.Identifier(name)
    conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident, sql.Identifier(p.owner)))
    copy_settings(conn, p, name)
    copy_acl(conn, like, name, p.owner)


def copy_settings(conn: psycopg.Connection, p: DatabaseProperties, name: str) -> None:
    """ALTER DATABASE ... SET (for everyone and per role) as stored, the connection limit and the comment."""
    ident = sql.Identifier(name)
    for role, config in p.settings:
        for item in config:
            key, _, value = item.partition("=")
            values = ([sql.Literal(v) for v in split_guc_list(value)] if key.lower() in GUC_LIST_QUOTE
                      else [sql.Literal(value)])
            setting = sql.SQL("SET {} = {}").format(sql.Identifier(key), sql.SQL(", ").join(values))
            query = (sql.SQL("ALTER ROLE {} IN DATABASE {} {}").format(sql.Identifier(role), ident, setting) if role
                     else sql.SQL("ALTER DATABASE {} {}").format(ident, setting))
            conn.execute(query)
    conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(ident, sql.Literal(p.connection_limit)))
    if p.comment is not None:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, sql.Literal(p.comment)))


def copy_acl(conn: psycopg.Connection, source: str, name: str, owner: str) -> None:
    """The ACL exactly: NULL (the defaults) stays NULL; otherwise every default is revoked first (PUBLIC's
    and the owner's own), then each item is granted by its own grantor, in the source's order."""
    items = conn.execute(
        "SELECT g.rolname, r.rolname, a.privilege_type, a.is_grantable FROM pg_database d, "
        "LATERAL unnest(d.datacl) WITH ORDINALITY AS u(item, n), LATERAL aclexplode(ARRAY[u.item]) a "
        "LEFT JOIN pg_roles g ON g.oid = a.grantor LEFT JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE d.datname = %s AND d.datacl IS NOT NULL ORDER BY u.n", [source]).fetchall()
    has_acl = conn.execute("SELECT datacl IS NOT NULL FROM pg_database WHERE datname = %s", [source]).fetchone()[0]
    if not has_acl:
        return
    ident = sql.Identifier(name)
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC, {}").format(ident, sql.Identifier(owner)))
    current = conn.execute("SELECT current_user").fetchone()[0]
    for grantor, grantee, privilege, grantable in items:
        to = sql.Identifier(grantee) if grantee is not None else sql.SQL("PUBLIC")
        grant = sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
            sql.SQL(privilege), ident, to, sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL(""))
        if grantor in (None, current, owner):
            conn.execute(grant)  # a superuser's or the owner's grant is recorded as the owner's
            continue
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(grantor)))
        try:
            conn.execute(grant)
        finally:
            conn.execute("RESET ROLE")


class SwapError(BackupbotError):
    """The swap did not happen; the target is still the database it was."""


def maintenance_dsn(dsn: str, *busy: str) -> str:
    """A database to connect to for a swap that is none of the ones being renamed."""
    for name in MAINTENANCE:
        if name not in busy:
            return with_dbname(dsn, name)
    raise SwapError("no maintenance database (postgres or template1) to run the swap from")


def swap_databases(dsn: str, target: str, side: str, keep_as: str, attempts: int = 50) -> None:
    """Put database `side` in place of `target` by name, keeping the old `target` as `keep_as`.

    Both databases first stop accepting connections and their sessions are ended; then both renames
    run in ONE transaction from a maintenance database, so every other client sees `target` naming
    the old database or the new one, never nothing: a concurrent CREATE DATABASE of that name waits and
    fails. The new `target` then gets the old one's flags (connections, limit, template); `keep_as`
    accepts connections, for whoever inspects it. Raises SwapError when nothing was renamed."""
    for name in (target, side, keep_as):
        validate_database_name(name)
    t, s, k = sql.Identifier(target), sql.Identifier(side), sql.Identifier(keep_as)
    with psycopg.connect(maintenance_dsn(dsn, target, side, keep_as), autocommit=True, connect_timeout=10) as conn:
        before = database_properties(conn, target)
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(t))
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(s))
        try:
            _rename_both(conn, (target, side), (sql.SQL("ALTER DATABASE {} RENAME TO {}").format(t, k),
                                                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(s, t)), attempts)
        except BaseException as exc:  # nothing was renamed: the target takes connections again
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                t, sql.SQL("true" if before.allow_connections else "false")))
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(s))  # to be dropped
            raise SwapError(f"the swap did not happen, {target} is unchanged: {exc}") from exc
        conn.execute(sql.SQL("ALTER DATABASE {} WITH CONNECTION LIMIT {} IS_TEMPLATE {} ALLOW_CONNECTIONS {}").format(
            t, sql.Literal(before.connection_limit), sql.SQL("true" if before.is_template else "false"),
            sql.SQL("true" if before.allow_connections else "false")))
        conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false ALLOW_CONNECTIONS true").format(k))


def _rename_both(conn: psycopg.Connection, names: tuple[str, str], renames: tuple, attempts: int) -> None:
    """Both renames in one transaction, after ending the sessions on both; retried while they go away."""
    for attempt in range(attempts):
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ANY(%s) "
                     "AND pid <> pg_backend_pid()", [list(names)])
        try:
            with conn.transaction():
                for rename in renames:
                    conn.execute(rename)
            return
        except psycopg.errors.ObjectInUse:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


def reopen_database(dsn: str, name: str) -> bool:
    """After a bot died mid-swap: `name` takes connections again if the swap had shut them (the one flag a
    swap sets before it renames). True when it had to."""
    with psycopg.connect(maintenance_dsn(dsn, name), autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", [name]).fetchone()
        if row is None or row[0]:
            return False
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
        return True
