"""Which entries of a custom archive (`pg_restore --list`) restore some tables whole.

Entries are chosen by the (catalog, OID) pairs the backup recorded; only the few without an OID
are matched by their text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from commands.errors import UsageError
from commands.pg.names import QualifiedName

_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
PG_CLASS = 1259  # 'pg_class'::regclass in every PostgreSQL


@dataclass(frozen=True)
class TocLine:
    line: str
    tableoid: int
    oid: int
    rest: str  # "DESC schema tag owner": read only for entries without an OID, and only by equality


def toc_lines(toc: str) -> list[TocLine]:
    lines = []
    for line in toc.splitlines():
        m = _TOC_LINE.match(line)
        if m:
            lines.append(TocLine(line, int(m.group(2)), int(m.group(3)), m.group(4)))
    return lines


def _listed(text: str) -> str:
    """How `pg_restore --list` prints a name: newlines and carriage returns become spaces."""
    return text.replace("\n", " ").replace("\r", " ")


def _tag_forms(name: str) -> set[str]:
    """A comment's or ACL's tag names its object as pg_dump's fmtId does (quoted when needed)."""
    return {name, '"' + name.replace('"', '""') + '"'}


def _oidless_entries(table: dict) -> set[str]:
    """The `pg_restore --list` text of a table's entries that carry no OID (sequence values, comments,
    ACLs), in every form pg_dump may write them, so a line is matched whole, by equality."""
    schema, owner = table["schema"], table["owner"]
    texts = set()
    for tag in _tag_forms(table["name"]):
        for desc in ("COMMENT", "ACL", "SECURITY LABEL"):
            texts.add(f"{desc} {schema} TABLE {tag} {owner}")
        for column in table["columns"]:
            for col in _tag_forms(column):
                for desc in ("COMMENT", "ACL", "SECURITY LABEL"):
                    texts.add(f"{desc} {schema} COLUMN {tag}.{col} {owner}")
    for seq in table["sequences"]:
        texts.add(f"SEQUENCE SET {seq['schema']} {seq['name']} {seq['owner']}")
        texts.add(f"SEQUENCE OWNED BY {seq['schema']} {seq['name']} {seq['owner']}")
        for tag in _tag_forms(seq["name"]):
            texts.add(f"COMMENT {seq['schema']} SEQUENCE {tag} {seq['owner']}")
            texts.add(f"ACL {seq['schema']} SEQUENCE {tag} {seq['owner']}")
    return {_listed(t) for t in texts}


def select_toc_entries(toc: str, objects: dict, wanted: list[QualifiedName], backup_id: int) -> str:
    """The archive entries that restore `wanted` whole: definition, data, defaults, constraints,
    indexes, triggers, policies, rules, owned sequences with their values, comments and ACLs, plus
    the foreign keys that point at them (so their keys can be dropped and re-created).

    Entries are chosen by the (catalog, OID) pairs the backup recorded for each table; the few
    entries pg_dump writes without an OID are matched by their whole line, and refused when another
    table's entries would read the same (names that differ only in where a space falls)."""
    tables = {QualifiedName(t["schema"], t["name"]): t for t in objects["tables"]}
    chosen = []
    for name in wanted:
        if name not in tables:
            raise UsageError(f"backup #{backup_id} does not record table {name.key}")
        chosen.append(tables[name])
    pairs = {(int(c), int(o)) for t in chosen for c, o in (p.split(":") for p in t["parts"])}
    pairs |= {(PG_CLASS, t["oid"]) for t in chosen}
    data_oids = {t["oid"] for t in chosen}
    oidless = set().union(*(_oidless_entries(t) for t in chosen))
    others = set().union(set(), *(_oidless_entries(t) for n, t in tables.items() if n not in wanted))
    clash = oidless & others
    if clash:
        raise UsageError(f"backup #{backup_id}: tables' names are too alike to pick their entries apart "
                         f"({sorted(clash)[0]!r}); restore the whole backup instead")
    kept = [t.line for t in toc_lines(toc)
            if (t.tableoid, t.oid) in pairs
            or (t.tableoid == 0 and t.oid in data_oids)  # TABLE DATA carries its table's OID
            or (t.tableoid == 0 and t.oid == 0 and t.rest in oidless)]
    return "\n".join(kept) + "\n"
