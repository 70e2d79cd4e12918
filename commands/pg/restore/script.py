"""The SQL the bot writes around a dump: the cleaning prologue and the verification before COMMIT.

Every name in it comes from the backup's manifest (read in the dump's snapshot).
"""

from __future__ import annotations

from psycopg import sql

from commands.errors import UsageError
from commands.pg import snapshot as pg_snapshot
from commands.pg.names import parse_key
from state.backups import BackupRecord


def recorded_objects(record: BackupRecord) -> dict:
    if not record.objects:
        raise UsageError(f"backup #{record.id} was taken by an older backupbot that did not record its schemas and "
                         "tables exactly; restore it by hand (see its manifest), or take a new backup")
    return record.objects


def clean_prologue(record: BackupRecord) -> sql.Composable:
    """SQL that empties what a whole-database dump is about to recreate, in the dump's own transaction.

    Every schema the dump writes (recorded in the dump's snapshot) is dropped, and `public` is
    recreated as PostgreSQL 15 makes it: the runbook's bare `DROP SCHEMA public CASCADE` misses
    every other schema. A dump of some tables drops only those tables, without CASCADE, so views
    and foreign keys of other tables are never dropped silently: the restore fails and rolls back.
    """
    objects = recorded_objects(record)
    if record.tables:
        return sql.SQL("").join(sql.SQL("DROP TABLE IF EXISTS {};\n").format(parse_key(key).identifier())
                                for key in record.tables)
    statements = [sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE;\n").format(sql.Identifier(name))
                  for name in objects["schemas"] if name != "public"]
    statements.append(sql.SQL("DROP SCHEMA IF EXISTS public CASCADE;\n"
                              "CREATE SCHEMA public AUTHORIZATION pg_database_owner;\n"
                              "GRANT USAGE ON SCHEMA public TO PUBLIC;\n"
                              "COMMENT ON SCHEMA public IS 'standard public schema';\n"))
    return sql.SQL("").join(statements)


def not_valid_scope(tables: list[str]) -> tuple[str, ...]:
    """NOT VALID constraints are recorded as `schema.table.constraint` (as the catalog spells them):
    the prefixes that put one in the scope of a `--tables` restore."""
    return tuple(f"{name.schema}.{name.name}." for name in map(parse_key, tables))


def verification_sql(record: BackupRecord, tables: list[str]) -> sql.Composable:
    """A DO block that raises, before COMMIT, when the restored rows or NOT VALID constraints differ
    from the backup's: a restore that does not verify never commits."""
    expected = {key: n for key, n in record.row_counts.items() if not tables or key in tables}
    body = [sql.SQL("DECLARE n bigint; found text[]; wanted text[]; BEGIN\n")]
    for key, count in sorted(expected.items()):
        body.append(sql.SQL(
            "SELECT count(*) INTO n FROM ONLY {table};\n"
            "IF n <> {count} THEN RAISE EXCEPTION 'backupbot verification: % has % rows, the backup has %', "
            "{key}, n, {count}; END IF;\n").format(table=parse_key(key).identifier(), count=sql.Literal(count),
                                                   key=sql.Literal(key)))
    recorded = sorted(record.not_valid_constraints)
    scope = not_valid_scope(tables)
    if tables:
        recorded = [c for c in recorded if c.startswith(scope)]
    body.append(sql.SQL(
        "SELECT coalesce(array_agg(x ORDER BY x), '{{}}') INTO found FROM ({query}) AS v(x) {scope};\n"
        "SELECT coalesce(array_agg(x ORDER BY x), '{{}}') INTO wanted FROM unnest({recorded}::text[]) AS w(x);\n"
        "IF found IS DISTINCT FROM wanted THEN RAISE EXCEPTION "
        "'backupbot verification: NOT VALID constraints are %, the backup had %', found, wanted; END IF;\n"
        "END").format(query=sql.SQL(pg_snapshot.NOT_VALID_SQL.replace("ORDER BY 1", "").strip()),
                      scope=sql.SQL("WHERE {}").format(sql.SQL(" OR ").join(
                          sql.SQL("starts_with(x, {})").format(sql.Literal(p)) for p in scope)) if tables else sql.SQL(""),
                      recorded=sql.Literal(recorded)))
    return sql.SQL("DO {};\n").format(sql.Literal(sql.Composed(body).as_string(None)))
