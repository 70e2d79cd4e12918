"""A REPEATABLE READ transaction whose snapshot pg_dump also dumps, so counts match the dump exactly."""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

from commands.errors import DatabaseUnavailableError, UsageError
from commands.redact import redact

TABLE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$")

USER_TABLES_SQL = """
SELECT n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

NOT_VALID_SQL = """
SELECT n.nspname || '.' || c.relname || '.' || con.conname
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT con.convalidated ORDER BY 1
"""


def connect(dsn: str, timeout_s: int = 10, statement_timeout_ms: int | None = None, **kwargs) -> psycopg.Connection:
    """Connect with a bounded wait; errors come back redacted."""
    options = f"-c statement_timeout={statement_timeout_ms}" if statement_timeout_ms else None
    try:
        return psycopg.connect(dsn, connect_timeout=timeout_s, application_name="backupbot",
                               **({"options": options} if options else {}), **kwargs)
    except psycopg.Error as exc:
        raise DatabaseUnavailableError(f"cannot connect: {redact(str(exc).strip(), [dsn])}") from None


def dbname_of(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    return params.get("dbname") or params.get("user") or "postgres"


def validate_table_names(names: list[str]) -> list[str]:
    for name in names:
        if not TABLE_NAME_RE.match(name):
            raise UsageError(f"{name!r} is not a table name (letters, digits, _ ; optionally schema.table)")
    return names


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot: str
    server_version: str
    database_size: int
    tables: tuple[str, ...]  # schema.table of every table dumped


def list_user_tables(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    return list(conn.execute(USER_TABLES_SQL).fetchall())


def resolve_tables(all_tables: list[tuple[str, str, str]], wanted: list[str], database: str) -> list[str]:
    """Map user names (`t` or `schema.t`, case-insensitive like unquoted SQL) to exact schema.table."""
    resolved = []
    for name in wanted:
        if "." in name:
            schema, table = name.lower().split(".", 1)
            matches = [(s, t) for s, t, _ in all_tables if s.lower() == schema and t.lower() == table]
        else:
            matches = [(s, t) for s, t, _ in all_tables if t.lower() == name.lower()]
            if len(matches) > 1:
                public = [m for m in matches if m[0] == "public"]
                if len(public) != 1:
                    schemas = ", ".join(s for s, _ in matches)
                    raise UsageError(f"table {name!r} exists in several schemas ({schemas}); write schema.table")
                matches = public
        if not matches:
            raise UsageError(f"no table {name!r} in database {database}")
        resolved.append(f"{matches[0][0]}.{matches[0][1]}")
    return resolved


def quote_table(qualified: str) -> str:
    schema, table = qualified.split(".", 1)
    return f'"{schema}"."{table}"'


def count_rows(conn: psycopg.Connection, tables: list[str]) -> dict[str, int]:
    counts = {}
    for qualified in tables:
        schema, table = qualified.split(".", 1)
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        counts[qualified] = conn.execute(query).fetchone()[0]
    return counts


def not_valid_constraints(conn: psycopg.Connection) -> list[str]:
    return [row[0] for row in conn.execute(NOT_VALID_SQL).fetchall()]
