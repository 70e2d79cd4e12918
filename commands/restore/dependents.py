"""What depends on the tables a `--tables` restore replaces, found in the target's catalog before anyone is asked.

A `--tables` restore drops the requested tables and creates them again in one transaction. A view
on one of them makes that DROP fail; a foreign key of another table that points at one is dropped
and added again, and fails when the restored rows no longer hold what the other table references.
Either way the restore would fail after approval, rolled back. So the plan looks at the target's
pg_constraint and pg_depend (by OID, never by parsing tool output) and refuses such a request up
front, naming each dependent (quoted, control characters escaped) and what would work instead.
"""

from __future__ import annotations

from commands.errors import UsageError
from commands.pg import snapshot as pg_snapshot
from commands.pg.names import QualifiedName, parse_key
from commands.pg.roles import show_name
from state.backups import BackupRecord

DEPENDENTS_SQL = """
WITH wanted AS (
  SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN unnest(%(schemas)s::text[], %(names)s::text[]) AS w(s, t) ON n.nspname = w.s AND c.relname = w.t
)
SELECT 'foreign key', cn.nspname, cc.relname, con.conname::text, rn.nspname, rc.relname
FROM pg_constraint con
JOIN pg_class cc ON cc.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
JOIN pg_class rc ON rc.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE con.contype = 'f' AND con.confrelid IN (SELECT oid FROM wanted) AND con.conrelid NOT IN (SELECT oid FROM wanted)
UNION
SELECT CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END, vn.nspname, v.relname, NULL, tn.nspname, t.relname
FROM pg_depend d
JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
JOIN pg_class v ON v.oid = r.ev_class JOIN pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_class t ON d.refclassid = 'pg_class'::regclass AND t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE d.refobjid IN (SELECT oid FROM wanted) AND v.oid <> d.refobjid AND v.oid NOT IN (SELECT oid FROM wanted)
ORDER BY 1, 2, 3, 4
"""


def _show(name: QualifiedName) -> str:
    return show_name(name.key)


def dependents(target_dsn: str, tables: list[str]) -> list[tuple[str, QualifiedName, str | None, QualifiedName]]:
    """(kind, dependent, constraint or None, requested table it depends on) for each FK or view."""
    names = [parse_key(key) for key in tables]
    with pg_snapshot.connect(target_dsn) as conn:
        rows = conn.execute(DEPENDENTS_SQL, {"schemas": [n.schema for n in names],
                                             "names": [n.name for n in names]}).fetchall()
    return [(kind, QualifiedName(s, n), con, QualifiedName(ts, tn)) for kind, s, n, con, ts, tn in rows]


def backup_table_keys(record: BackupRecord) -> set[str]:
    """The keys of the tables `--tables` could name in this backup."""
    if record.tables:
        return set(record.tables)
    if record.objects:
        return {QualifiedName(t["schema"], t["name"]).key for t in record.objects["tables"]}
    return set(record.row_counts)


def refuse_dependents(target_dsn: str, target_dbname: str, tables: list[str], record: BackupRecord) -> None:
    """Refuse a `--tables` restore whose tables other tables' foreign keys or views depend on in the target."""
    found = dependents(target_dsn, tables)
    if not found:
        return
    lines = []
    for kind, dependent, constraint, table in found:
        if kind == "foreign key":
            lines.append(f"table {_show(dependent)} has foreign key {show_name(constraint)} to {_show(table)}")
        else:
            lines.append(f"{kind} {_show(dependent)} depends on {_show(table)}")
    in_backup = backup_table_keys(record)
    referencing = {d for kind, d, _, _ in found if kind == "foreign key"}
    views = sorted({d for kind, d, _, _ in found if kind != "foreign key"})
    missing = sorted(d for d in referencing if d.key not in in_backup)
    if views:
        instead = (f"restore the whole backup (--tables restores tables, not the view(s) "
                   f"{', '.join(_show(v) for v in views)})")
    elif missing:
        instead = (f"restore the whole backup (backup #{record.id} does not hold "
                   f"{', '.join(_show(m) for m in missing)}, so --tables cannot add it)")
    else:
        add = ", ".join(_show(n) for n in sorted({parse_key(t) for t in tables} | referencing))
        instead = f"add them with --tables {add}, or restore the whole backup"
    shown = ", ".join(_show(parse_key(t)) for t in tables)
    raise UsageError(f"backup #{record.id}: --tables {shown} cannot be restored alone: in {show_name(target_dbname)}, "
                     + "; ".join(lines) + f", so replacing the table(s) would fail after approval. Instead, {instead}.")
