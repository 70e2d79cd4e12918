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
    """Row counts keyed by each table's reversible key (`commands.pg.names`): each table's own rows (ONLY),
    as pg_dump writes them and the backup counted them, never its inheritance children's too."""
    counts = {}
    for table in tables:
        query = sql.SQL("SELECT count(*) FROM ONLY {}").format(table.identifier())
        counts[table.key] = conn.execute(query).fetchone()[0]
    return counts


LOADED_ROWS_SQL = """SELECT u.key, s.n_tup_ins - s.n_tup_del
FROM unnest(%s::text[], %s::text[]) AS u(key, name)
LEFT JOIN pg_stat_user_tables s ON s.relid = to_regclass(u.name)"""


def loaded_rows(conn: psycopg.Connection, tables: list[QualifiedName]) -> dict[str, int | None]:
    """What the restore itself says it loaded into a database made for it: each table's inserts minus
    deletes in its statistics, in one query. Statistics can lag or be off (track_counts), so a caller
    trusts only a figure that equals the one it expects, and counts the others."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    names = [table.identifier().as_string(conn) for table in tables]
    rows = conn.execute(LOADED_ROWS_SQL, [[t.key for t in tables], names]).fetchall()
    return {key: loaded for key, loaded in rows}


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

# One set-based query for every table, whatever their number: each catalog is read once and grouped by
# table (a correlated subquery per table made the fixed cost of a backup grow with the square of the
# table count: the foreign keys that point at a table have no index on pg_constraint.confrelid).
TABLE_OBJECTS_SQL = """
WITH t AS (
  SELECT c.oid, n.nspname, c.relname, c.relkind, c.relowner
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p')
    AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                    AND d.objid = c.oid AND d.deptype = 'e')
), cols AS (
  SELECT a.attrelid AS relid, array_agg(a.attname::text ORDER BY a.attnum) AS columns,
         array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE {dumped_column}) AS dumped
  FROM pg_attribute a JOIN t ON t.oid = a.attrelid
  WHERE a.attnum > 0 AND NOT a.attisdropped GROUP BY 1
), parts AS (
  SELECT relid, array_agg(part) AS parts FROM (
    SELECT i.indrelid AS relid, 'pg_class'::regclass::oid::text || ':' || i.indexrelid AS part FROM pg_index i
    UNION ALL SELECT con.conrelid, 'pg_constraint'::regclass::oid::text || ':' || con.oid FROM pg_constraint con
              WHERE con.conrelid <> 0
    UNION ALL SELECT con.confrelid, 'pg_constraint'::regclass::oid::text || ':' || con.oid FROM pg_constraint con
              WHERE con.contype = 'f' AND con.confrelid <> con.conrelid
    UNION ALL SELECT tg.tgrelid, 'pg_trigger'::regclass::oid::text || ':' || tg.oid FROM pg_trigger tg
              WHERE NOT tg.tgisinternal
    UNION ALL SELECT ad.adrelid, 'pg_attrdef'::regclass::oid::text || ':' || ad.oid FROM pg_attrdef ad
    UNION ALL SELECT p.polrelid, 'pg_policy'::regclass::oid::text || ':' || p.oid FROM pg_policy p
    UNION ALL SELECT r.ev_class, 'pg_rewrite'::regclass::oid::text || ':' || r.oid FROM pg_rewrite r
              WHERE r.rulename <> '_RETURN'
  ) x WHERE relid IN (SELECT oid FROM t) GROUP BY relid
), seqs AS (
  SELECT d.refobjid AS relid,
         array_agg(json_build_array(sn.nspname, s.relname, pg_get_userbyid(s.relowner), s.oid)::text) AS sequences
  FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
  JOIN pg_namespace sn ON sn.oid = s.relnamespace
  WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
    AND d.refobjid IN (SELECT oid FROM t)
  GROUP BY 1
)
SELECT t.oid, t.nspname, t.relname, t.relkind, pg_get_userbyid(t.relowner), coalesce(cols.columns, '{{}}'),
       coalesce(cols.dumped, '{{}}'), coalesce(parts.parts, '{{}}'), coalesce(seqs.sequences, '{{}}')
FROM t LEFT JOIN cols ON cols.relid = t.oid LEFT JOIN parts ON parts.relid = t.oid LEFT JOIN seqs ON seqs.relid = t.oid
ORDER BY 2, 3
"""

# Keywords pg_dump's fmtId quotes (all but unreserved ones), so COPY lines can be rebuilt exactly
QUOTED_KEYWORDS_SQL = "SELECT coalesce(array_agg(word::text), '{}') FROM pg_get_keywords() WHERE catcode <> 'U'"


@dataclass(frozen=True)
class DumpedTable:
    """A table as the dump holds it: what its data is counted by, and under which key it is reported."""

    oid: int
    name: QualifiedName
    kind: str
    copy_columns: tuple[str, ...]  # the columns pg_dump's COPY lists: not dropped, not generated


@dataclass(frozen=True)
class Catalog:
    objects: list[dict]  # table_objects' entries, as the manifest records them
    tables: list[DumpedTable]

    def user_tables(self) -> list[tuple[QualifiedName, str]]:
        return [(t.name, t.kind) for t in self.tables]


def dumped_schemas(conn: psycopg.Connection) -> list[str]:
    """The schemas a whole-database pg_dump writes (not system or extension-owned ones)."""
    return [row[0] for row in conn.execute(DUMPED_SCHEMAS_SQL).fetchall()]


def read_catalog(conn: psycopg.Connection) -> Catalog:
    """For each user table, in one query: its OID, owner, columns, and the (catalog, OID) pairs of every
    object that belongs to it in a dump: indexes, constraints (with foreign keys that point at it),
    triggers, defaults, policies, rules; and its owned or identity sequences."""
    generated = conn.info.server_version >= 120000  # attgenerated: PostgreSQL 12
    query = TABLE_OBJECTS_SQL.format(dumped_column="a.attgenerated = ''" if generated else "true")
    # The planner underestimates the owned sequences and probes pg_depend once per table in nested loops:
    # 56,000 buffers at 5,000 tables, against 7,700 with hash joins. Only for this query, in this transaction.
    previous = conn.execute("SELECT current_setting('enable_nestloop')").fetchone()[0]
    conn.execute("SELECT set_config('enable_nestloop', 'off', true)")
    rows = conn.execute(query).fetchall()  # on an error the transaction, and the setting, are rolled back
    conn.execute("SELECT set_config('enable_nestloop', %s, true)", [previous])
    objects, tables = [], []
    for oid, schema, name, kind, owner, columns, dumped, parts, sequences in rows:
        seqs = [json.loads(s) for s in sequences]
        objects.append({
            "schema": schema, "name": name, "kind": kind, "oid": int(oid), "owner": owner, "columns": list(columns),
            "parts": sorted(parts) + [f"{_PG_CLASS}:{s[3]}" for s in seqs],
            "sequences": [{"schema": s[0], "name": s[1], "owner": s[2], "oid": int(s[3])} for s in seqs],
        })
        tables.append(DumpedTable(int(oid), QualifiedName(schema, name), kind, tuple(dumped)))
    return Catalog(objects, tables)


def table_objects(conn: psycopg.Connection) -> list[dict]:
    return read_catalog(conn).objects


def quoted_keywords(conn: psycopg.Connection) -> frozenset[str]:
    return frozenset(conn.execute(QUOTED_KEYWORDS_SQL).fetchone()[0])


_PG_CLASS = 1259  # 'pg_class'::regclass, fixed in every PostgreSQL
