"""A REPEATABLE READ transaction whose snapshot pg_dump also dumps, so counts match the dump exactly."""

from __future__ import annotations

import json
from dataclasses import dataclass

import psycopg
from psycopg import sql

from commands.errors import DatabaseUnavailableError
from commands.pg.names import NameRef, QualifiedName, resolve_names
from commands.redact import redact

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


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot: str
    server_version: str
    database_size: int
    tables: tuple[str, ...]  # schema.table of every table dumped


def list_user_tables(conn: psycopg.Connection) -> list[tuple[QualifiedName, str]]:
    """(name, relkind) of every user table, partitioned parents included."""
    return [(QualifiedName(schema, name), kind) for schema, name, kind in conn.execute(USER_TABLES_SQL).fetchall()]


def resolve_tables(all_tables: list[tuple[QualifiedName, str]], wanted: list[NameRef], where: str) -> list[QualifiedName]:
    return resolve_names([name for name, _ in all_tables], wanted, where)


def count_rows(conn: psycopg.Connection, tables: list[QualifiedName]) -> dict[str, int]:
    """Row counts keyed by each table's reversible key (`commands.pg.names`)."""
    counts = {}
    for table in tables:
        query = sql.SQL("SELECT count(*) FROM {}").format(table.identifier())
        counts[table.key] = conn.execute(query).fetchone()[0]
    return counts


def not_valid_constraints(conn: psycopg.Connection) -> list[str]:
    return [row[0] for row in conn.execute(NOT_VALID_SQL).fetchall()]


def database_size(conn: psycopg.Connection) -> int:
    """The size on disk of the database `conn` is connected to (the one size query: /backup, /db-health)."""
    return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


# Read in the dump's own snapshot, so they describe exactly what pg_dump wrote. A restore picks
# archive entries by these OIDs and drops schemas by these names: nothing is read back out of
# `pg_restore --list` text, which does not quote names.
DUMPED_SCHEMAS_SQL = """
SELECT n.nspname FROM pg_namespace n
WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                  AND d.objid = n.oid AND d.deptype = 'e')
ORDER BY 1
"""

TABLE_OBJECTS_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner),
  ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
        AND NOT a.attisdropped ORDER BY a.attnum),
  ARRAY(
    SELECT 'pg_class'::regclass::oid::text || ':' || i.indexrelid FROM pg_index i WHERE i.indrelid = c.oid
    UNION ALL SELECT 'pg_constraint'::regclass::oid::text || ':' || con.oid FROM pg_constraint con
              WHERE con.conrelid = c.oid OR (con.confrelid = c.oid AND con.contype = 'f')
    UNION ALL SELECT 'pg_trigger'::regclass::oid::text || ':' || t.oid FROM pg_trigger t
              WHERE t.tgrelid = c.oid AND NOT t.tgisinternal
    UNION ALL SELECT 'pg_attrdef'::regclass::oid::text || ':' || ad.oid FROM pg_attrdef ad WHERE ad.adrelid = c.oid
    UNION ALL SELECT 'pg_policy'::regclass::oid::text || ':' || p.oid FROM pg_policy p WHERE p.polrelid = c.oid
    UNION ALL SELECT 'pg_rewrite'::regclass::oid::text || ':' || r.oid FROM pg_rewrite r
              WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN'
  ),
  ARRAY(SELECT json_build_array(sn.nspname, s.relname, pg_get_userbyid(s.relowner), s.oid)::text
        FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        JOIN pg_namespace sn ON sn.oid = s.relnamespace
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.refobjid = c.oid AND d.deptype IN ('a', 'i'))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 2, 3
"""


def dumped_schemas(conn: psycopg.Connection) -> list[str]:
    """The schemas a whole-database pg_dump writes (not system or extension-owned ones)."""
    return [row[0] for row in conn.execute(DUMPED_SCHEMAS_SQL).fetchall()]


def table_objects(conn: psycopg.Connection) -> list[dict]:
    """For each user table: its OID, owner, columns, and the (catalog, OID) pairs of every object that
    belongs to it in a dump: indexes, constraints (with foreign keys that point at it), triggers,
    defaults, policies, rules; and its owned or identity sequences."""
    tables = []
    for oid, schema, name, kind, owner, columns, parts, sequences in conn.execute(TABLE_OBJECTS_SQL).fetchall():
        seqs = [json.loads(s) for s in sequences]
        tables.append({
            "schema": schema, "name": name, "kind": kind, "oid": int(oid), "owner": owner, "columns": list(columns),
            "parts": sorted(parts) + [f"{_PG_CLASS}:{s[3]}" for s in seqs],
            "sequences": [{"schema": s[0], "name": s[1], "owner": s[2], "oid": int(s[3])} for s in seqs],
        })
    return tables


_PG_CLASS = 1259  # 'pg_class'::regclass, fixed in every PostgreSQL
