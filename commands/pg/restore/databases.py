"""Whole databases: create (like another), copy what pg_restore never restores, swap by name, drop.

Every name goes through `psycopg.sql.Identifier`, and bot-made names are checked first.
"""

from __future__ import annotations

import re
import time

import psycopg
from psycopg import sql

from commands.errors import UsageError
from commands.pg import snapshot as pg_snapshot
from commands.pg.names import read_quoted
from commands.pg.tools import with_dbname

DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def validate_database_name(name: str) -> str:
    if not DB_NAME_RE.match(name):
        raise UsageError(f"{name!r} is not a database name (lowercase letters, digits and _, at most 63)")
    return name


def create_database(dsn: str, name: str, like: str | None = None) -> None:
    """CREATE DATABASE `name`; with `like`, with that database's owner, encoding and locale."""
    validate_database_name(name)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        if like is None:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
            return
        owner, encoding, collate, ctype = conn.execute(
            "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype "
            "FROM pg_database WHERE datname = %s", [like]).fetchone()
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Identifier(name), sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype)))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(owner)))
        copy_database_settings(conn, like, name)


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


def copy_database_settings(conn: psycopg.Connection, source: str, target: str) -> None:
    """What pg_restore without --create never restores, from `source` onto `target` (a side database
    about to take its name): ALTER DATABASE ... SET (for everyone and per role), the database's
    privileges, its connection limit and its comment."""
    dbid = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", [source]).fetchone()[0]
    target_id = sql.Identifier(target)
    for role, config in conn.execute(
            "SELECT r.rolname, s.setconfig FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE s.setdatabase = %s", [dbid]).fetchall():
        for item in config:
            key, _, value = item.partition("=")
            values = ([sql.Literal(v) for v in split_guc_list(value)] if key.lower() in GUC_LIST_QUOTE
                      else [sql.Literal(value)])
            setting = sql.SQL("SET {} = {}").format(sql.Identifier(key), sql.SQL(", ").join(values))
            if role is None:
                query = sql.SQL("ALTER DATABASE {} {}").format(target_id, setting)
            else:
                query = sql.SQL("ALTER ROLE {} IN DATABASE {} {}").format(sql.Identifier(role), target_id, setting)
            conn.execute(query)
    limit, comment, has_acl = conn.execute(
        "SELECT datconnlimit, shobj_description(oid, 'pg_database'), datacl IS NOT NULL FROM pg_database "
        "WHERE oid = %s", [dbid]).fetchone()
    conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(target_id, sql.Literal(limit)))
    if comment is not None:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(target_id, sql.Literal(comment)))
    if has_acl:  # NULL means the defaults, which a new database has already
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(target_id))
        for grantee, privilege, grantable in conn.execute(
                "SELECT r.rolname, a.privilege_type, a.is_grantable FROM pg_database d, aclexplode(d.datacl) a "
                "LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE d.oid = %s", [dbid]).fetchall():
            to = sql.Identifier(grantee) if grantee is not None else sql.SQL("PUBLIC")
            conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege), target_id, to, sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL("")))


def drop_database(dsn: str, name: str) -> None:
    validate_database_name(name)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def swap_databases(dsn: str, target: str, side: str, keep_as: str) -> None:
    """Put database `side` in place of `target` by name, keeping the old `target` as `keep_as`.

    Sessions on the target are ended (it refuses new ones meanwhile). If the second rename fails the
    first is undone, so `target` always names either the old or the new database, never nothing."""
    validate_database_name(side)
    validate_database_name(keep_as)
    with psycopg.connect(with_dbname(dsn, side), autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(target)))
        renamed = False
        try:
            _rename_when_free(conn, target, keep_as)
            renamed = True
        finally:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                sql.Identifier(keep_as if renamed else target)))
    try:
        with psycopg.connect(with_dbname(dsn, keep_as), autocommit=True, connect_timeout=10) as conn:
            _rename_when_free(conn, side, target)
    except BaseException:
        with psycopg.connect(with_dbname(dsn, side), autocommit=True, connect_timeout=10) as conn:
            _rename_when_free(conn, keep_as, target)
        raise


def _rename_when_free(conn: psycopg.Connection, old: str, new: str, attempts: int = 50) -> None:
    """ALTER DATABASE ... RENAME after ending the sessions on it, retried while they go away."""
    for attempt in range(attempts):
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                     "AND pid <> pg_backend_pid()", [old])
        try:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))
            return
        except psycopg.errors.ObjectInUse:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


def databases_like(dsn: str, pattern: str) -> list[str]:
    """Databases whose names match a LIKE pattern (bot-made names only)."""
    with pg_snapshot.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [pattern])]


def database_exists(dsn: str, name: str) -> bool:
    with pg_snapshot.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None
